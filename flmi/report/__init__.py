"""The run directory, metrics files and the terminal report."""

"""Medical tasks: a model, its local training step and its metrics (PyTorch)."""

"""Data sets, generators and partitioners. Everything here stays at a site."""

"""Server-side federated algorithms, one module per family (numpy only)."""

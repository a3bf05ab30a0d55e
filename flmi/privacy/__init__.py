"""Privacy protocols: secure aggregation (masked sums) and homomorphic aggregation."""

"""Privacy: differential privacy (DP-SGD at the sites, DP-FedAvg at the server, their
accounting), secure aggregation (masked sums) and homomorphic aggregation."""

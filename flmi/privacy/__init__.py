"""Differential privacy: DP-SGD at the sites, DP-FedAvg at the server, and their accounting."""

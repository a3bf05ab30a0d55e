"""The deployment runtime: gRPC with mutual TLS between a server and hospital clients."""

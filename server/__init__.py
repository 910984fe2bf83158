"""The gRPC serving side of Axon (transport -> batching -> runtime). Imports no torch."""

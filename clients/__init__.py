"""Clients of the Axon gRPC API. Import no server modules and no torch."""

"""The Open Inference Protocol's HTTP/REST binding: aiohttp's server on the gRPC event loop,
routing, the edge (tokens, admission, metrics, errors), JSON and binary tensors."""

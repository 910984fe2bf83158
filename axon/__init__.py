"""Axon: gRPC model serving for dense neural networks.

This package holds what both sides share and neither may get wrong on its own: the model
repository layout, the model card (the metadata embedded in every exported model) and the
pre-processing that turns pixels into model input. It imports neither torch nor grpc.
"""

__version__ = "0.1.0"

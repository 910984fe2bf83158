"""Generated gRPC stubs of the wire contract (``make proto`` from ``proto/``); never edit them.

``open_inference_pb2``: the Open Inference Protocol (package ``inference``).
``v1.classification_pb2``: Axon's classification API (package ``axon.v1``).
"""

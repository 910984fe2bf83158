"""gRPC servicers: protobuf <-> numpy conversion and hand-off to the models, nothing else."""

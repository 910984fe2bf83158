"""Generated stubs of Axon's classification API, version 1 (package ``axon.v1``)."""

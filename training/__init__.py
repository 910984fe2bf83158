"""Training side of Axon: data sets, the dense model, the training loop and ONNX export.

Modules that only need numpy (``idx``, ``datasets``, ``fetch``, ``image_folder``) import no torch,
so clients may read data sets without the training extras.
"""

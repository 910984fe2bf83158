"""Which onnxruntime build runs the models: the ``cpu`` extra installs ``onnxruntime``, the
``gpu`` extra ``onnxruntime-gpu``.

Neither is a base dependency. Both builds install the same ``onnxruntime`` module, and pip can
neither hold both nor swap one for the other, so a base install carrying the CPU build would
leave a GPU user uninstalling a declared dependency by hand.
"""

from __future__ import annotations

import importlib.util

from axon.errors import UsageError

ONNXRUNTIME_MISSING = (
    "onnxruntime is not installed: install Axon with one of its two extras, "
    "pip install 'axon-serving[cpu]' (onnxruntime) or pip install 'axon-serving[gpu]' "
    "(onnxruntime-gpu, for NVIDIA GPUs); from a source folder, '.[cpu]' or '.[gpu]'")


def require_onnxruntime() -> None:
    """Raise ``UsageError`` (one line naming both extras) when no onnxruntime build can be
    imported. The module is found, not imported: a command's ``--help`` stays fast."""
    if importlib.util.find_spec("onnxruntime") is None:
        raise UsageError(ONNXRUNTIME_MISSING)

"""arnas-zoo's deployment runtime: exported ONNX models with onnxruntime, numpy and pillow (no torch).

>>> from arnas_zoo_runtime import Predictor, predict_paths          # doctest: +SKIP
>>> model = Predictor("model.onnx", providers="cpu")                 # doctest: +SKIP
>>> rows = list(predict_paths(model, ["photos/"], top_k=3))         # doctest: +SKIP

``arnas-zoo-runtime serve model.onnx`` (the ``serve`` extra: FastAPI, uvicorn) answers HTTP requests;
``arnas-zoo-runtime predict model.onnx DIR --csv out.csv`` classifies folders. The full ``arnas-zoo``
package contains this one; install ``arnas-zoo-runtime`` alone where torch is not wanted.
"""

from __future__ import annotations

import importlib
from typing import Any

# public name -> module (imported on first use, PEP 562: importing the package, or its digest module
# from the torch package, loads neither numpy nor onnxruntime)
_EXPORTS = {
    "ImageFileError": "images",
    "decode_image": "images",
    "expand": "images",
    "read_file": "images",
    "predict_paths": "predict",
    "write_rows": "predict",
    "CPU": "session",
    "CUDA": "session",
    "InputError": "session",
    "ModelFileError": "session",
    "Predictor": "session",
    "ProviderError": "session",
    "ProviderFallbackWarning": "session",
    "RuntimeFault": "session",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"arnas_zoo_runtime.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'arnas_zoo_runtime' has no attribute {name!r}")


__version__ = "0.2.0"  # released together with arnas-zoo

__all__ = [
    "CPU",
    "CUDA",
    "ImageFileError",
    "InputError",
    "ModelFileError",
    "Predictor",
    "ProviderError",
    "ProviderFallbackWarning",
    "RuntimeFault",
    "decode_image",
    "expand",
    "predict_paths",
    "read_file",
    "write_rows",
]

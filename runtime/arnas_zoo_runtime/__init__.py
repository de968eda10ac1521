"""arnas-zoo's deployment runtime: exported ONNX models with onnxruntime, numpy and pillow (no torch).

>>> from arnas_zoo_runtime import Predictor, predict_paths          # doctest: +SKIP
>>> model = Predictor("model.onnx", providers="cpu")                 # doctest: +SKIP
>>> rows = list(predict_paths(model, ["photos/"], top_k=3))         # doctest: +SKIP

``arnas-zoo-runtime serve model.onnx`` (the ``serve`` extra: FastAPI, uvicorn) answers HTTP requests;
``arnas-zoo-runtime predict model.onnx DIR --csv out.csv`` classifies folders. The full ``arnas-zoo``
package contains this one; install ``arnas-zoo-runtime`` alone where torch is not wanted.
"""

from __future__ import annotations

from arnas_zoo_runtime.images import ImageFileError, decode_image, expand, read_file
from arnas_zoo_runtime.predict import predict_paths, write_rows
from arnas_zoo_runtime.session import (
    CPU,
    CUDA,
    InputError,
    ModelFileError,
    Predictor,
    ProviderError,
    ProviderFallbackWarning,
    RuntimeFault,
)

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

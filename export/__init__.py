"""Publishing and deployment of arnas-zoo checkpoints (run from a checkout: ``python -m export ...``).

- ``python -m export hub FOLDER --repo-id ORG/NAME [--tag v1.0] [--private] [--dry-run]``:
  build the Hub-ready folder (config.json, model.safetensors, metrics.json, README.md model card,
  optional model.onnx), upload it, tag it, print the commit to pin in the registry.
- ``python -m export onnx FOLDER -o model.onnx [--opset N] [--fp16]``: ONNX export with a full
  ``onnx.checker`` check and a parity check against PyTorch on real images.
- ``python -m export register FOLDER --name arch.variant``: print the registry line for a folder.

This package reads and writes checkpoint folders; it imports ``arnas_zoo`` and nothing else of the
project (DESIGN.md: ``search -> arnas_zoo <- export``).
"""

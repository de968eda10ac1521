"""Publishing and deployment of arnas-zoo checkpoints: ``arnas-zoo export ...`` (in a checkout also
``python -m export ...``). Installed as ``arnas_zoo_export``; its home in the repository is ``export/``.

- ``export hub FOLDER --repo-id ORG/NAME [--tag v1.0] [--private] [--dry-run]``: build the Hub-ready
  folder (config.json, model.safetensors, metrics.json, README.md model card, optional model.onnx),
  upload it, tag it, print the commit to pin in the registry.
- ``export onnx FOLDER -o model.onnx [--opset N] [--fp16]``: ONNX export with a full ``onnx.checker``
  check and a parity check against PyTorch on real images.
- ``export register FOLDER --name arch.variant [--index arnas_zoo/pretrained/index.json]``: the
  registry entry for a folder, every file pinned by sha256.
- ``export card FOLDER`` / ``export zoo-card``: the model cards.

This package reads and writes checkpoint folders; it imports ``arnas_zoo`` and nothing else of the
project (DESIGN.md: ``search -> arnas_zoo <- export``). Its modules import each other relatively, so
the same code runs as ``export`` in a checkout and as ``arnas_zoo_export`` when installed.
"""

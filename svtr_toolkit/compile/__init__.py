"""Stage 2: ONNX -> TVM engine: graph passes, precision plan, targets, tuning, build.

Imports only the base layer (never runtime or evaluate); the engine file format it writes is
``svtr_toolkit.engine_file``.
"""

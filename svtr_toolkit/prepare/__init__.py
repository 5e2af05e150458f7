"""Stage 1: the model, from a PaddleOCR checkpoint (or a registry wheel) to ONNX. Imports only the base layer."""

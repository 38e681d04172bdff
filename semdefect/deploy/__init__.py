"""Deployment: Keras to ONNX with a parity check, and static INT8 quantization with its report."""

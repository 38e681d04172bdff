"""Scoring any model (.keras, FP32 or INT8 ONNX) through one path: metrics and report files."""

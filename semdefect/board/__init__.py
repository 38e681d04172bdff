"""The board runtime: preprocessing, model metadata, the ONNX session and inference.

What runs on an NXP i.MX board with onnxruntime, numpy, Pillow and tqdm alone. It imports nothing outside this
subpackage (a test checks), so everything else may stand on it.
"""

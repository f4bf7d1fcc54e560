"""The TensorRT path: the op-support check of every committed ONNX graph (``support``) and the
FP16 engine build and cache (``build``).
"""

"""Neural models: the audio → expression motion model and the keypoint → face renderer, their
ONNX files and inference backends (ONNX Runtime, TensorRT, torch for training/export only).

The models arrive with their own issues; this package holds the place fixed by the layout.
"""

"""repo-gen: vision model -> ONNX/TensorRT -> Triton model repository."""
__version__ = "0.1.0"

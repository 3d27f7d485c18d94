"""Stages 2-3: ONNX export, graph passes, and numerical checks against PyTorch."""

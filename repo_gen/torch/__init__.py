"""Stage 1: PyTorch model loading (timm + checkpoints)."""

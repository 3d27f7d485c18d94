"""Stages 5-6: Triton model configs, the model repository, and the tritonserver process."""

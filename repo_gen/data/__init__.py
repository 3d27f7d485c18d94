"""Images in, model tensors out: the one preprocessing implementation and image sources."""

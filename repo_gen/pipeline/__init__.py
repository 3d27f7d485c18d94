"""The image-to-label pipeline: a Triton ensemble (preprocess -> classifier, top-k by the
classification extension) and the client that talks to it. See `ensemble.py` for the design."""

from repo_gen.pipeline.ensemble import (
    CLASSIFIER_PREFERENCE,
    IMAGE_INPUT,
    choose_classifier,
    ensemble_model_names,
    write_pipeline,
)

__all__ = ["CLASSIFIER_PREFERENCE", "IMAGE_INPUT", "choose_classifier", "ensemble_model_names", "write_pipeline"]

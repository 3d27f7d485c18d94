"""TensorRT stage: plan models for Triton's tensorrt backend.

`builder.py` is the only module that imports `tensorrt` (and it does so lazily); everything
else here is pure logic (`profile.py`, `trtexec.py`), file writing (`repository.py`) or
machine inspection without TensorRT (`cuda.py`, `serve.py`; the doctor rows live in `repo_gen.doctor`).
"""

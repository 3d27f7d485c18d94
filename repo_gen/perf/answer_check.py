"""One real request before a model is measured.

perf_analyzer never reads what a model answers, so a model answering with empty or non-finite outputs
is measured as if it worked. It happened: with numpy 2 in tritonserver 2.51's python-backend stub, every
numpy-built output reached clients with its shape and 0 bytes of data, and GPU serving figures were
taken on such a model (benchmarks/RESULTS.md, "numpy 2 in the stub").
"""

from __future__ import annotations

from typing import Any

import numpy as np


def check_answers(url: str, protocol: str, model: str, timeout_s: float = 60.0) -> str | None:
    """None when one batch-1 request with random inputs gets every configured output with all its data
    (and finite values where floating point); otherwise one line saying what is wrong. A model with a
    non-numeric input (encoded images) is not checked here: None."""
    from tritonclient.utils import triton_to_np_dtype

    if protocol == "grpc":
        import tritonclient.grpc as client_mod
    else:
        import tritonclient.http as client_mod  # type: ignore[no-redef]
    client: Any = (client_mod.InferenceServerClient(url) if protocol == "grpc"
                   else client_mod.InferenceServerClient(url, network_timeout=timeout_s))
    try:
        cfg = client.get_model_config(model, as_json=True) if protocol == "grpc" else client.get_model_config(model)
        cfg = cfg.get("config", cfg)
        batched = int(cfg.get("max_batch_size", 0)) > 0
        rng = np.random.default_rng(0)
        inputs = []
        for spec in cfg.get("input", []):
            triton_dtype = spec.get("data_type", "").removeprefix("TYPE_")
            dtype = triton_to_np_dtype(triton_dtype)
            if dtype is None or triton_dtype in ("BYTES", "STRING", "BF16"):  # encoded images; BF16 has no numpy type
                return None
            shape = ([1] if batched else []) + [max(1, int(d)) for d in spec.get("dims", [])]
            x = (rng.random(shape) if np.issubdtype(dtype, np.floating) else rng.integers(0, 2, shape)).astype(dtype)
            inp = client_mod.InferInput(spec["name"], shape, triton_dtype)
            inp.set_data_from_numpy(x)
            inputs.append(inp)
        try:
            result = client.infer(model, inputs, client_timeout=timeout_s) if protocol == "grpc" else client.infer(model, inputs)
        except Exception as e:
            return f"{model}: one request with random inputs failed: {str(e).splitlines()[0][:200]}"
        for spec in cfg.get("output", []):
            name = spec["name"]
            try:
                got = result.as_numpy(name)
            except ValueError as e:  # "cannot reshape array of size 0 into shape (1,1000)"
                return (f"{model}: output '{name}' came back without its data ({e}); its figures would measure a "
                        f"broken model (see `repo-gen doctor`, row 'python backend numpy')")
            if got is None:
                return f"{model}: output '{name}' missing from the answer"
            if np.issubdtype(got.dtype, np.floating) and not np.isfinite(got).all():
                return f"{model}: output '{name}' has non-finite values for random inputs in [0, 1)"
        return None
    finally:
        client.close()

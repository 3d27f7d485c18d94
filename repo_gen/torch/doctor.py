"""`repo-gen doctor` rows for the torch runtime: the GPUs torch sees here, and for a repository,
whether each torch model's compiled artifacts match this machine's torch and GPU."""

from __future__ import annotations

import json
from pathlib import Path

from repo_gen.doctor import Check


def gpu_checks() -> list[Check]:
    try:
        import torch
    except ImportError:
        return []
    if not torch.cuda.is_available():
        return [Check("GPUs (torch)", False, "none visible to torch",
                      "the torch runtime builds an eager CPU model here; build on a machine with an NVIDIA GPU")]
    rows = []
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        rows.append(Check(f"GPU {i}", True, f"{p.name}, SM {p.major}.{p.minor}, {p.total_memory / 2**30:.0f} GiB, "
                          f"{p.multi_processor_count} SMs (torch {torch.__version__}, CUDA {torch.version.cuda})"))
    return rows


def artifact_checks(repo: Path) -> list[Check]:
    """One row per torch-runtime model built for a GPU: do its artifacts fit this machine?"""
    rows = []
    for meta_file in sorted(repo.glob("*/*/torch_meta.json")):
        meta = json.loads(meta_file.read_text())
        if meta.get("device") != "cuda":
            continue
        name = f"{meta_file.parent.parent.name} v{meta_file.parent.name}"
        from repo_gen.torch.serving import artifact_mismatch

        try:
            import torch

            has_gpu = torch.cuda.is_available()
        except ImportError:
            has_gpu = False
        if not has_gpu:
            rows.append(Check(name, False, f"compiled for {meta.get('gpu_name')}; no GPU here",
                              "serve it on a machine with that GPU"))
            continue
        mismatch = artifact_mismatch(meta)
        rows.append(Check(name, mismatch is None,
                          mismatch or f"artifacts match (torch {meta.get('torch_version')}, {meta.get('gpu_name')})",
                          f"run {meta_file.parent / 'rebuild.sh'}" if mismatch else ""))
    return rows

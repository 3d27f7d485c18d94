"""Whether a torch-runtime model serves our LayerNorm/attention kernels or stays native: measured.

With `--plugins auto` (or `on`) and the plugin library at hand, the GPU build compiles the model
twice at its largest bucket (the batch the dynamic batcher forms under load), once native and once
with our kernels swapped in as `torch.library` custom ops (repo_gen/torch/kernel_ops.py), times both
end to end as the server runs them (copy into the bucket, CUDA-graph replay, output copy) in
alternating rounds, checks the kernels' logits against native, and keeps the kernels only when they
are faster by KERNEL_MARGIN with the same answers. Why measured, not assumed: custom ops are opaque
to inductor and break its fusions around them; on the H200 mobilevit_s gained only 1.04-1.07x
(benchmarks/RESULTS.md, "Served on a GPU"), another GPU or model may lose.
"""

from __future__ import annotations

import copy
import shutil
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# Kept only when this much faster: the alternating rounds' medians differ by ~1% between identical
# runners on a quiet GPU, so a smaller gain is not a measured win.
KERNEL_MARGIN = 1.03
ROUNDS = 7
CALLS_PER_ROUND = 50
# Files a kernel model needs beside model.py: the custom ops, their ctypes bindings, the library.
KERNEL_OPS_FILE = "repo_gen_kernel_ops.py"
KERNEL_BINDINGS_FILE = "repo_gen_kernels.py"


@dataclass
class KernelChoice:
    """What the build chose and the figures it chose by (torch_meta.json / manifest extra `kernel_choice`)."""

    kernels: str  # "native" or "plugins"
    reason: str
    batch: int | None = None
    native_ms: float | None = None
    plugins_ms: float | None = None
    speedup: float | None = None  # native_ms / plugins_ms: > 1 means our kernels are faster
    rel_l2: float | None = None  # kernels' logits vs native on the same random batch
    top1_agreement: float | None = None
    swapped: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v not in (None, {})}


def not_measured(reason: str) -> KernelChoice:
    return KernelChoice("native", reason)


def time_runners(runners: Mapping[str, Callable[[Any], Any]], x: Any, rounds: int = ROUNDS,
                 calls: int = CALLS_PER_ROUND) -> dict[str, float]:
    """Median milliseconds per call of each runner on `x`, the runners alternating round by round
    (order flipped every round) so drift of the GPU clock or the machine hits both alike."""
    import torch

    times: dict[str, list[float]] = {name: [] for name in runners}
    names = list(runners)
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(calls):
                runners[name](x)
            torch.cuda.synchronize()
            times[name].append((time.perf_counter() - t0) * 1000 / calls)
    return {name: round(statistics.median(ts), 4) for name, ts in times.items()}


def choose_kernels(native: Any, meta: dict[str, Any], device: Any, library: Path, tolerance: float,
                   force: bool = False) -> KernelChoice:
    """Measure our kernels against `native` (a prepared module, as `serving.build_module` returns) at
    the largest bucket of `meta` on `device`; `tolerance` is the relative L2 the kernels may differ by.
    `force` (`--plugins on`) keeps the kernels whatever their speed, as long as the answers agree."""
    import torch

    from repo_gen.torch import serving
    from repo_gen.torch.kernel_ops import swap_in_kernels

    batch = max(int(b) for b in meta["buckets"])
    one_bucket = {**meta, "buckets": [batch]}
    with_kernels = copy.deepcopy(native)
    swapped = swap_in_kernels(with_kernels, str(library))
    if not any(swapped.values()):
        return KernelChoice("native", "no LayerNorm or plain attention in this model for our kernels to replace",
                            batch=batch, swapped=swapped)
    runners = {"native": serving.BucketRunner(native, one_bucket, device),
               "plugins": serving.BucketRunner(with_kernels, one_bucket, device)}
    for runner in runners.values():
        runner.warm_up()
    g = torch.Generator().manual_seed(0)
    x = torch.rand(batch, 3, meta["image_size"], meta["image_size"], generator=g).to(device)
    with torch.inference_mode():
        ref = runners["native"](x).float()
        got = runners["plugins"](x).float()
    rel_l2 = float((got - ref).norm() / ref.norm())
    top1 = float((got.argmax(1) == ref.argmax(1)).float().mean())
    ms = time_runners(runners, x)
    speedup = round(ms["native"] / ms["plugins"], 3)
    figures: dict[str, Any] = dict(batch=batch, native_ms=ms["native"], plugins_ms=ms["plugins"], speedup=speedup,
                                   rel_l2=rel_l2, top1_agreement=top1, swapped=swapped)
    timing = (f"at batch {batch} native {ms['native']:.3f} ms, with our kernels {ms['plugins']:.3f} ms "
              f"({speedup:.3f}x)")
    if rel_l2 > tolerance or top1 < 1.0:
        return KernelChoice("native", f"our kernels disagree with native (relative L2 {rel_l2:.2e}, tolerance "
                            f"{tolerance:g}; top-1 agreement {top1 * 100:.1f}%): native kept; {timing}", **figures)
    if force:
        return KernelChoice("plugins", f"--plugins on: our kernels kept; {timing}", **figures)
    if speedup >= KERNEL_MARGIN:
        return KernelChoice("plugins", f"our kernels won: {timing} >= the {KERNEL_MARGIN}x margin", **figures)
    verdict = f"lost by {(1 - speedup) * 100:.1f}%" if speedup < 1 else f"won by only {(speedup - 1) * 100:.1f}%"
    return KernelChoice("native", f"our kernels {verdict}: {timing}, below the {KERNEL_MARGIN}x margin; native kept",
                        **figures)


def stage_kernel_files(version_dir: Path, library: Path) -> list[str]:
    """Copy what a kernel model imports at load next to model.py; returns the file names."""
    from repo_gen.plugins import kernels
    from repo_gen.torch import kernel_ops

    shutil.copyfile(Path(kernel_ops.__file__), version_dir / KERNEL_OPS_FILE)
    shutil.copyfile(Path(kernels.__file__), version_dir / KERNEL_BINDINGS_FILE)
    shutil.copyfile(library, version_dir / kernels.LIBRARY_NAME)
    return [KERNEL_OPS_FILE, KERNEL_BINDINGS_FILE, kernels.LIBRARY_NAME]

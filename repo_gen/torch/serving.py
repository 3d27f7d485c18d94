"""The PyTorch model a `torch`-runtime Triton model runs: built from weights, prepared, compiled, bucketed.

This file imports only torch and timm (never repo_gen): `repo-gen build` copies it next to the
generated model.py (`<version>/repo_gen_torch.py`), so the serving machine needs no repo-gen install,
and the build, the benchmark and the server all run this same code.

Start-up speed: compiling mobilevit_s for four batch buckets takes 110-174 s on the H200, and even with
torch.compile's caches warm a server start spent ~5 s per bucket in Dynamo's tracing. So the build
compiles each bucket ahead of time with Dynamo's AOT precompile (`torch.compile(...).forward.aot_compile`,
traced graph + inductor's kernels in one file, `compiled_b<bucket>.bin`) on the target GPU; the server
loads each file in about a second and captures its CUDA graph: no tracing, no compiling, no compile
workers. These files are pickles, as trusted as model.py itself: both come from `repo-gen build`. They
name no repo_gen module (a served model has none; the GPU tests serve without it). Where a bucket cannot
be precompiled (a torch without the API, or a model Dynamo cannot package), the build stores
torch.compile's caches instead (`torch.compiler.save_cache_artifacts`, `compile_cache.bin`), and the
server compiles that bucket at load with them. The artifacts are tied to the torch version and the
GPU: `artifact_mismatch` names a difference in one line, and the model then compiles from scratch
(correct, slow) and says how to rebuild.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import torch

META_FILE = "torch_meta.json"
WEIGHTS_FILE = "weights.pt"
CACHE_FILE = "compile_cache.bin"
PRECOMPILED_FILE = "compiled_b{bucket}.bin"
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def gpu_identity(device: int = 0) -> dict[str, Any]:
    """What compiled artifacts depend on: torch version and GPU model (name, compute capability)."""
    ident: dict[str, Any] = {"torch_version": torch.__version__, "cuda": torch.version.cuda}
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(device)
        ident.update(gpu_name=p.name, gpu_capability=f"{p.major}.{p.minor}")
    return ident


def artifact_mismatch(meta: dict[str, Any], device: int = 0) -> str | None:
    """One line naming how this machine differs from the one the artifacts were compiled on, or None."""
    if meta.get("device") != "cuda" or not (meta.get("cache_file") or meta.get("precompiled")):
        return None
    here = gpu_identity(device)
    diffs = [f"{k} {meta.get(k)!r} (here {here.get(k)!r})" for k in ("torch_version", "gpu_name", "gpu_capability")
             if meta.get(k) != here.get(k)]
    if not diffs:
        return None
    return (f"compiled artifacts were built for {', '.join(diffs)}; compiling from scratch at load (minutes); "
            f"rebuild on this machine: {meta.get('rebuild', 'repo-gen build --runtimes torch')}")


def fold_batchnorm(module: torch.nn.Module) -> int:
    """Fold every eval-mode BatchNorm2d into the Conv2d before it (timm's ConvNormAct: `.conv` + `.bn`).

    Inductor keeps inference BatchNorm as a separate elementwise pass (38% of mobilevit_s GPU time
    on the H200); folded, only the activation remains after each convolution. timm's BatchNormAct2d
    carries the activation inside the norm: it is kept as `drop` + `act`. Returns the number folded.
    """
    from torch.nn.utils.fusion import fuse_conv_bn_weights

    folded = 0
    for parent in list(module.modules()):
        conv, bn = getattr(parent, "conv", None), getattr(parent, "bn", None)
        if not isinstance(conv, torch.nn.Conv2d) or not isinstance(bn, torch.nn.BatchNorm2d):
            continue
        if bn.running_mean is None or bn.running_var is None:
            continue
        w, b = fuse_conv_bn_weights(conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.eps, bn.weight, bn.bias)
        conv.weight, conv.bias = w, b
        tail = [m for m in (getattr(bn, "drop", None), getattr(bn, "act", None)) if isinstance(m, torch.nn.Module)]
        parent.bn = torch.nn.Sequential(*tail) if tail else torch.nn.Identity()
        folded += 1
    return folded


def build_module(meta: dict[str, Any], weights: Path, device: torch.device) -> torch.nn.Module:
    """The timm architecture with the stored weights (read with weights_only=True), prepared for serving."""
    import timm

    module = timm.create_model(meta["timm_name"], pretrained=False, num_classes=int(meta["num_classes"]))
    state = torch.load(weights, map_location="cpu", weights_only=True)
    module.load_state_dict(state)
    module.eval()
    if meta.get("fold_bn", True):
        fold_batchnorm(module)
    if meta.get("kernels") == "plugins":
        try:  # beside model.py in a repository; in repo_gen when the benchmark imports this file
            from repo_gen_kernel_ops import swap_in_kernels
        except ImportError:
            from repo_gen.torch.kernel_ops import swap_in_kernels

        lib = Path(meta["plugin_lib"])  # relative: staged beside the weights by the build
        swap_in_kernels(module, str(lib if lib.is_absolute() else weights.parent / lib))
    module = module.to(device=device, dtype=DTYPES[meta["dtype"]])
    if meta.get("channels_last", False):
        module = module.to(memory_format=torch.channels_last)
    return module


class BucketRunner:
    """Runs a batch of any size as one or more bucket-sized pieces, the last one padded.

    Which pieces: the split of n rows with the least cost (`plan`), from each bucket's measured time
    on the GPU (`warm_up`) or its size otherwise. Why: the dynamic batcher forms any size up to the
    max, and padding to the next bucket can double the work (65 rows in a 128 bucket, or two merged
    64-image requests in a 256 bucket, where 64 + 64 costs half).

    With `compile_mode` set, each bucket is its own static-shape compiled graph. `cuda_graphs`
    (meta) says how it is replayed:
      "manual" (default for new builds): compiled with inductor's default mode, then captured by us
        into one `torch.cuda.CUDAGraph` per bucket reading a static input buffer; a call is one
        copy into the buffer and `graph.replay()`, with no Dynamo guard evaluation and no
        CUDA-graph-tree bookkeeping on the host. Why: a served execute() synchronizes on every
        batch, so the host time of a call is not hidden behind the previous batch as it is in a
        back-to-back loop (RESULTS.md, GPU serving: 4.6 ms served vs 3.96 ms in-process at batch 64).
      "trees": `mode="reduce-overhead"` (torch's CUDA graph trees), what the first builds used.
    The input buffer is copied into once, which also converts dtype and memory layout in the same
    kernel. Outputs of a CUDA graph live in memory the next replay overwrites, so `__call__`
    returns a copy.
    """

    def __init__(self, module: torch.nn.Module, meta: dict[str, Any], device: torch.device):
        self.module = module
        self.device = device
        self.dtype = DTYPES[meta["dtype"]]
        self.buckets = sorted(int(b) for b in meta["buckets"])
        self.size = int(meta["image_size"])
        self.channels_last = bool(meta.get("channels_last", False))
        mode = meta.get("compile_mode") or None
        self.manual_graphs = bool(mode) and device.type == "cuda" and meta.get("cuda_graphs", "trees") == "manual"
        if self.manual_graphs:
            mode = None  # inductor's default: we capture the graphs ourselves
        self.fn = torch.compile(module, mode=mode, dynamic=False) if meta.get("compile_mode") else module
        self.memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        self.inputs = {b: torch.zeros(b, 3, self.size, self.size, device=device, dtype=self.dtype).contiguous(memory_format=self.memory_format)
                       for b in self.buckets}
        self.graphs: dict[int, tuple[Any, torch.Tensor]] = {}
        # Per bucket, its AOT-precompiled forward (`precompile` here, `load_precompiled` at a server
        # start), used in place of `self.fn` for that bucket's CUDA graph.
        self.compiled: dict[int, Any] = {}
        self.pool = torch.cuda.graph_pool_handle() if self.manual_graphs else None
        # "dynamic_batch" (benchmark only, the runner phase's manual-dynamic variant): one compiled graph
        # with a symbolic batch for every bucket above 1 (batch 1 is always specialized by Dynamo), each
        # bucket still its own CUDA graph. It was the build's faster-start option (--torch-dynamic-batch,
        # removed) until the precompiled buckets started faster and ran 17% faster (RESULTS.md, run 17).
        self.dynamic_batch = self.manual_graphs and bool(meta.get("dynamic_batch"))
        if self.dynamic_batch:
            big = [b for b in self.buckets if b > 1]
            for b in big:
                torch._dynamo.mark_dynamic(self.inputs[b], 0, min=2, max=max(big))
        # Cost of one call per bucket: measured by warm_up on a GPU; until then its size plus a fixed
        # per-call cost (on the H200 a batch-1 call costs about what 8 images cost at batch 64).
        self.cost = {b: float(b + 8) for b in self.buckets}
        self._plans: dict[int, list[int]] = {}

    def bucket_for(self, n: int) -> int:
        for b in self.buckets:
            if n <= b:
                return b
        raise ValueError(f"batch {n} is larger than the largest bucket {self.buckets[-1]}")

    def plan(self, n: int) -> list[int]:
        """Rows per piece for a batch of n (each piece runs in `bucket_for(rows)`): the cheapest split
        by `self.cost`; beyond the largest bucket, whole largest buckets first."""
        if n < 1:
            raise ValueError(f"batch {n}: must be at least 1")
        top = self.buckets[-1]
        whole, rest = divmod(n, top)
        if rest == 0:
            return [top] * whole
        if rest not in self._plans:
            # best[k]: (cost, -rows of the first piece) of the cheapest split of k rows (ties: the larger
            # piece first); k <= top, a handful of buckets.
            best: list[tuple[float, int]] = [(0.0, 0)]
            for k in range(1, top + 1):
                best.append(min((self.cost[b] + best[max(0, k - b)][0], -min(b, k)) for b in self.buckets))
            self._plans.clear()
            for k in range(1, top):
                pieces, left = [], k
                while left:
                    pieces.append(-best[left][1])
                    left += best[left][1]
                self._plans[k] = pieces
        return [top] * whole + self._plans[rest]

    @torch.inference_mode()
    def capture(self, bucket: int) -> None:
        """Compile (first call) and capture bucket's CUDA graph; buckets share one memory pool,
        safe because replays run one at a time on one stream and outputs are copied out."""
        buf = self.inputs[bucket]
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        fn = self.compiled.get(bucket, self.fn)
        with torch.cuda.stream(side):  # warm-up off the capture stream, as torch.cuda.graph requires
            for _ in range(2):
                fn(buf)
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool):
            out = fn(buf)
        self.graphs[bucket] = (graph, out)

    def can_precompile(self) -> str | None:
        """None when every bucket can be AOT-precompiled, else why not (one line)."""
        if not self.manual_graphs:
            return "AOT precompile is used with compiled, manually captured CUDA graphs on a GPU only"
        if self.dynamic_batch:
            return "a symbolic-batch graph (meta dynamic_batch, the benchmark's manual-dynamic variant) is compiled at load"
        if not hasattr(torch.compiler, "load_compiled_function"):
            return f"torch {torch.__version__} has no AOT precompile (torch.compiler.load_compiled_function)"
        return None

    def precompile(self) -> dict[int, float]:
        """AOT-precompile every bucket here (Dynamo trace + inductor compile, kept for `save_precompiled`);
        seconds per bucket. Each is compiled as `capture` calls it: on the bucket's own input buffer,
        in inference mode."""
        import contextlib

        seconds = {}
        for b in self.buckets:
            t0 = time.perf_counter()
            # torch 2.11 requires the opt-in; later versions have no such switch.
            opt_in = (torch._dynamo.config.patch("enable_aot_compile", True)
                      if hasattr(torch._dynamo.config, "enable_aot_compile") else contextlib.nullcontext())
            # No guards are saved: they are never checked (see load_precompiled), so the file need carry
            # nothing they would reference.
            no_guards: dict[str, Any] | None = ({"guard_filter_fn": torch.compiler.skip_all_guards_unsafe}
                         if hasattr(torch.compiler, "skip_all_guards_unsafe") else None)
            with torch.inference_mode(), opt_in:
                optimized: Any = torch.compile(self.module, fullgraph=True, dynamic=False, options=no_guards)
                compiled = optimized.forward.aot_compile(((self.inputs[b],), {}))
            self.compiled[b] = _Precompiled(compiled, self.module)
            seconds[b] = round(time.perf_counter() - t0, 2)
        return seconds

    @property
    def precompiled_bound(self) -> bool:
        """Whether the precompiled buckets are bound to the module (see `_Precompiled`); for the meta."""
        return bool(self.compiled) and all(fn.bound for fn in self.compiled.values())

    def save_precompiled(self, version_dir: Path) -> dict[str, str]:
        """Write each precompiled bucket to `version_dir`; {bucket: file name} for the meta."""
        files = {}
        for b, fn in sorted(self.compiled.items()):
            files[str(b)] = PRECOMPILED_FILE.format(bucket=b)
            fn.compiled.save_compiled_function(str(version_dir / files[str(b)]), **self._external(fn.bound))
        return files

    def load_precompiled(self, version_dir: Path, files: dict[str, str], bound: bool = False) -> None:
        """Load the build's precompiled buckets (about a second each on the H200, no tracing); `bound` is
        the meta's `precompiled_bound`, recorded by the build from `precompiled_bound`."""
        for b in self.buckets:
            with open(version_dir / files[str(b)], "rb") as f:
                compiled: Any = torch.compiler.load_compiled_function(f, **self._external(bound))
            # Its guards are not checked per call: on torch 2.11 the reloaded guards reject inference-mode
            # calls on a dispatch-key check the live function passes, and the runner calls each bucket's
            # function only with that bucket's own input buffer (shape, dtype, layout and device fixed
            # by the meta they were compiled from; a torch or GPU change is caught by artifact_mismatch).
            compiled.disable_guard_check()
            self.compiled[b] = _Precompiled(compiled, self.module)

    def _external(self, bound: bool) -> dict[str, Any]:
        """A bound forward's module, handed to torch's save and load instead of pickled; nothing otherwise."""
        return {"external_data": {"module": self.module}} if bound else {}

    @torch.inference_mode()
    def __call__(self, x: torch.Tensor | list[torch.Tensor], out_dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Logits for a batch, given as one tensor or as the requests' tensors in order (copied straight
        into the bucket buffers, so a merged batch is never concatenated first)."""
        parts = [x] if isinstance(x, torch.Tensor) else list(x)
        if not self.manual_graphs and self.fn is self.module:  # eager: any batch size as it is
            batch = torch.cat(parts) if len(parts) > 1 else parts[0]
            return self.fn(batch.to(self.device, self.dtype).contiguous(memory_format=self.memory_format)).to(out_dtype, copy=True)
        outs = []
        pending = list(parts)
        for rows in self.plan(sum(p.shape[0] for p in parts)):
            chunk, need = [], rows
            while need:  # the next `rows` rows, across request boundaries
                head = pending[0]
                take = min(need, head.shape[0])
                chunk.append(head[:take])
                pending[0] = head[take:]
                if pending[0].shape[0] == 0:
                    pending.pop(0)
                need -= take
            outs.append(self._run_bucket(chunk, out_dtype))  # one stream: outputs are copied out before the next replay
        return outs[0] if len(outs) == 1 else torch.cat(outs)

    def _run_bucket(self, chunk: list[torch.Tensor], out_dtype: torch.dtype) -> torch.Tensor:
        n = sum(c.shape[0] for c in chunk)
        bucket = self.bucket_for(n)
        buf = self.inputs[bucket]
        row = 0
        for c in chunk:  # the copy also converts dtype and memory layout
            buf[row : row + c.shape[0]].copy_(c, non_blocking=True)
            row += c.shape[0]
        if n < buf.shape[0]:
            buf[n:].zero_()  # padding rows: finite values, results discarded
        if self.manual_graphs:
            if bucket not in self.graphs:
                self.capture(bucket)
            graph, out = self.graphs[bucket]
            graph.replay()
        else:
            out = self.fn(buf)
        return out[:n].to(dtype=out_dtype, copy=True)

    def warm_up(self, rounds: int = 3) -> dict[int, float]:
        """Compile (first call) and settle every bucket; seconds per bucket."""
        seconds = {}
        for b in self.buckets:
            t0 = time.perf_counter()
            x = torch.rand(b, 3, self.size, self.size, device=self.device)
            if self.manual_graphs:
                self.capture(b)
                rounds_left = 1
            else:
                rounds_left = rounds  # CUDA graph trees record on the second call, replay from the third
            for _ in range(rounds_left):
                self(x)
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            seconds[b] = round(time.perf_counter() - t0, 2)
            if self.device.type == "cuda" and self.fn is not self.module:
                self.cost[b] = self.time_bucket(x)
        self._plans.clear()
        return seconds

    def time_bucket(self, x: torch.Tensor, calls: int = 5) -> float:
        """Milliseconds per call of a full bucket, synchronized per call as served (median)."""
        times = []
        for _ in range(calls):
            t0 = time.perf_counter()
            self._run_bucket([x], torch.float32)
            torch.cuda.synchronize(self.device)
            times.append(time.perf_counter() - t0)
        return sorted(times)[len(times) // 2] * 1e3


class _Precompiled:
    """An AOT-precompiled forward with the module it runs. Two interfaces, told apart by the compiled
    function's own signature: torch 2.11's takes the module first (`(self, x)`) and saves none of it;
    later ones (2.14 checked) are bound to the module (`(*args, **kwargs)`), which save and load must
    be handed as `external_data`, and a call passes the input alone."""

    def __init__(self, compiled: Any, module: torch.nn.Module):
        self.compiled = compiled
        self.module = module
        signature = getattr(getattr(compiled, "_artifacts", None), "signature", None)
        self.bound = not (signature is not None and next(iter(signature.parameters), None) == "self")

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.compiled(x) if self.bound else self.compiled(self.module, x)


def load_runner(version_dir: Path, device: torch.device, log=print) -> tuple[BucketRunner, dict[str, Any]]:
    """Everything model.py's initialize does: meta, module, precompiled buckets (or caches and a
    compile), CUDA-graph capture and warm-up.

    `meta["load_s"]` (in the returned meta) records where the start-up time went, for the server
    log and the benchmark: module build, precompiled load (or cache load), and capture (or compile +
    capture) per bucket.
    """
    t0 = time.perf_counter()
    meta = json.loads((version_dir / META_FILE).read_text())
    if meta["device"] == "cuda" and device.type != "cuda":
        raise RuntimeError(f"this model was built for a CUDA GPU ({meta.get('gpu_name')}) but the instance has none; "
                           f"serve it on a GPU machine or rebuild here: {meta.get('rebuild')}")
    load_s: dict[str, Any] = {}
    fits = device.type == "cuda"
    if fits:
        torch.cuda.set_device(device)
        mismatch = artifact_mismatch(meta, device.index or 0)
        if mismatch:
            log(mismatch)
            fits = False
    from torch._inductor import config as inductor_config

    threads = inductor_config.compile_threads
    if fits and meta.get("precompiled") and "TORCHINDUCTOR_COMPILE_THREADS" not in os.environ:
        # Loading compiles nothing: keep inductor from starting its pool of compile workers, which it
        # does when its output code is first imported (on the H200: 17 more python processes per
        # instance, 0.75 GiB more PSS for two instances, same start time; RESULTS.md run 18). A fallback
        # compile below gets the pool back.
        inductor_config.compile_threads = 1
    t1 = time.perf_counter()
    module = build_module(meta, version_dir / WEIGHTS_FILE, device)
    load_s["module"] = round(time.perf_counter() - t1, 2)
    if device.type != "cuda":
        meta = {**meta, "compile_mode": None}  # CPU fallback: eager (see the build's note)
    runner = BucketRunner(module, meta, device)
    if fits and meta.get("precompiled"):
        t1 = time.perf_counter()
        try:
            runner.load_precompiled(version_dir, meta["precompiled"], bool(meta.get("precompiled_bound")))
            load_s["precompiled"] = round(time.perf_counter() - t1, 2)
        except Exception as e:  # a damaged or incompatible file: compile instead, slower but correct
            runner.compiled.clear()
            inductor_config.compile_threads = threads
            log(f"precompiled buckets did not load ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
                f"compiling at load instead (minutes); rebuild on this machine: {meta.get('rebuild')}")
    cache = meta.get("cache_file")
    if fits and cache and (version_dir / cache).is_file() and len(runner.compiled) < len(runner.buckets):
        # Must run before the first compile so the compile finds the artifacts.
        t1 = time.perf_counter()
        torch.compiler.load_cache_artifacts((version_dir / cache).read_bytes())
        load_s["cache"] = round(time.perf_counter() - t1, 2)
    load_s["buckets"] = runner.warm_up()
    load_s["total"] = round(time.perf_counter() - t0, 2)
    return runner, {**meta, "load_s": load_s}

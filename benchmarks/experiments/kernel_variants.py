"""Tuning experiment: time LayerNorm and attention kernel variants side by side on the GPU.

Builds nothing itself: expects `exp_kernels.so` compiled from exp_attention.cu + exp_layernorm.cu
(see run_variants.sh). Uses bench_kernels.py's timing method (CUDA graph of --inner launches
over rotating random input sets, median of --reps replays), checks every variant against a
float64 reference on NaN-poisoned outputs, and times a device-to-device copy of the same bytes
(read + written) the same way. Prints one table; writes variants.json to $OUT.
"""

from __future__ import annotations

import ctypes
import json
import os
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench_kernels import HEADS, MOBILEVIT_S, ceilings, sets_for, time_graph  # noqa: E402

INNER, REPS = 40, 25
lib = ctypes.CDLL(os.environ.get("EXP_LIB", "exp_kernels.so"))
P = ctypes.c_void_p
lib.exp_attention_f16.argtypes = [ctypes.c_int, ctypes.c_int, P, P, P, P, ctypes.c_int, ctypes.c_int,
                                  ctypes.c_int, ctypes.c_int, ctypes.c_float, ctypes.c_int, P]
lib.exp_layernorm_f16.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int, P, P, P, P, ctypes.c_int64,
                                  ctypes.c_int, ctypes.c_float, P]


def stream() -> int:
    return torch.cuda.current_stream().cuda_stream


def copy_us(nbytes: int, n_sets: int) -> float:
    """Same-size copy: nbytes read + written in total, i.e. nbytes / 2 each way, same rotation."""
    n = max(1, nbytes // 4)  # halves per buffer
    src = [torch.randn(n, device="cuda").half() for _ in range(n_sets)]
    dst = [torch.empty_like(s) for s in src]
    us, _ = time_graph(lambda i: dst[i].copy_(src[i]), n_sets, INNER, REPS)
    return us


def layernorm_rows(results: list, copy_gbs: float) -> None:
    for b in (1, 16, 64):
        for n, d in MOBILEVIT_S:
            layernorm_shape(results, copy_gbs, b, n, d)


def layernorm_shape(results: list, copy_gbs: float, b: int, n: int, d: int) -> None:
    rows = 4 * b * n
    nbytes = 2 * rows * d * 2
    n_sets = sets_for(nbytes)
    xs = [(torch.randn(rows, d, device="cuda") * 2 + 1).half() for _ in range(n_sets)]
    ys = [torch.empty_like(x) for x in xs]
    gamma = torch.randn(d, device="cuda") * 0.5 + 1
    beta = torch.randn(d, device="cuda") * 0.5
    ref = F.layer_norm(xs[0].double(), (d,), gamma.double(), beta.double(), 1e-5)
    configs = [(0, 0, 0), (4, 0, 0), (0, 0, 1), (4, 0, 1), (2, 4, 0), (2, 8, 0), (3, 4, 0), (3, 8, 0)]
    base = {"op": "ln", "B": b, "N": n, "d": d, "MB": nbytes / 1e6, "copy_us": copy_us(nbytes, n_sets)}
    print(f"LN B={b} d={d}: same-size copy {base['copy_us']:.2f} us", flush=True)
    for kind, tpr, r in configs:
        if kind == 3 and (tpr, (d // 8 + tpr - 1) // tpr) not in {(4, 5), (4, 6), (8, 3)}:
            continue

        def launch(i, kind=kind, tpr=tpr, r=r):
            st = lib.exp_layernorm_f16(kind, tpr, r, xs[i].data_ptr(), gamma.data_ptr(), beta.data_ptr(),
                                       ys[i].data_ptr(), rows, d, 1e-5, stream())
            if st:
                raise RuntimeError(f"status {st}")

        ys[0].fill_(float("nan"))
        launch(0)
        torch.cuda.synchronize()
        err = ((ys[0].double() - ref).abs().max() / ref.abs().max()).item()
        us, _ = time_graph(launch, n_sets, INNER, REPS)
        row = {**base, "kind": kind, "tpr": tpr, "rpg": r, "us": us, "err": err,
               "pct_copy": 100 * nbytes / (us * 1e-6) / 1e9 / copy_gbs}
        results.append(row)
        print(f"   kind {kind} tpr {tpr:2d} code {r}: {us:6.2f} us  {row['pct_copy']:5.1f}% peak copy  "
              f"err {err:.1e}", flush=True)


def attention_rows(results: list, copy_gbs: float) -> None:
    for b in (1, 4, 16, 64):
        attention_shape(results, copy_gbs, b, 64, 192)


def attention_correctness() -> None:
    """The library's dispatch (variant 0) on odd shapes: max relative error vs float64, NaNs."""
    worst = 0.0
    for n in (33, 48, 64):
        for hd in (16, 17, 18, 20, 24, 32, 36, 48, 60, 64):
            for batch in (1, 40):
                for packed in (0, 1):
                    heads = 4
                    scale = hd**-0.5
                    if packed:
                        qkv = (torch.randn(batch, n, 3, heads, hd, device="cuda") * 1.5).half()
                        q, k, v = (qkv[:, :, i].permute(0, 2, 1, 3) for i in range(3))
                        o = torch.full((batch, n, heads, hd), float("nan"), device="cuda", dtype=torch.float16)
                        ptrs = (qkv.data_ptr(), 0, 0)
                    else:
                        q, k, v = ((torch.randn(batch, heads, n, hd, device="cuda") * 1.5).half() for _ in range(3))
                        o = torch.full_like(q, float("nan"))
                        ptrs = (q.data_ptr(), k.data_ptr(), v.data_ptr())
                    st = lib.exp_attention_f16(0, 0, *ptrs, o.data_ptr(), batch, heads, n, hd, scale, packed,
                                               stream())
                    ref = torch.softmax((q.double() * scale) @ k.double().transpose(-1, -2), -1) @ v.double()
                    if packed:
                        ref = ref.permute(0, 2, 1, 3)
                    torch.cuda.synchronize()
                    err = ((o.double() - ref).abs().max() / ref.abs().max()).item()
                    nans = int(torch.isnan(o).sum())
                    worst = max(worst, err if not nans else float("inf"))
                    if st or nans or err > 2e-3:
                        print(f"   BAD n={n} hd={hd} batch={batch} packed={packed}: status {st} err {err:.2e} "
                              f"nans {nans}", flush=True)
    print(f"correctness sweep of the dispatch: worst relative error {worst:.2e}", flush=True)


def attention_shape(results: list, copy_gbs: float, b: int, n: int, d: int) -> None:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    seqs, hd = 4 * b, d // HEADS
    scale = hd**-0.5
    set_bytes = 4 * seqs * HEADS * n * hd * 2
    n_sets = sets_for(set_bytes)
    qkv = [torch.randn(3, seqs, HEADS, n, hd, device="cuda").half() for _ in range(n_sets)]
    outs = [torch.empty(seqs, HEADS, n, hd, device="cuda", dtype=torch.float16) for _ in range(n_sets)]
    q0, k0, v0 = (t.double() for t in qkv[0])
    ref = torch.softmax((q0 * scale) @ k0.transpose(-1, -2), -1) @ v0
    base = {"op": "attn", "B": b, "N": n, "hd": hd, "MB": set_bytes / 1e6,
            "copy_us": copy_us(set_bytes, n_sets)}
    sd = {}
    for name, be in (("efficient", SDPBackend.EFFICIENT_ATTENTION), ("flash", SDPBackend.FLASH_ATTENTION)):
        try:
            with sdpa_kernel([be]):
                F.scaled_dot_product_attention(*qkv[0], scale=scale)

            def run(i, be=be):
                with sdpa_kernel([be]):
                    F.scaled_dot_product_attention(*qkv[i], scale=scale)

            sd[name], _ = time_graph(run, n_sets, INNER, REPS)
        except RuntimeError:
            pass
    base["sdpa"] = sd
    best = min(sd.values())
    print(f"ATTN B={b} N={n} hd={hd}: same-size copy {base['copy_us']:.2f} us, SDPA {sd}", flush=True)
    variants = [(0, 0), (1, 0)]
    for code in (41, 21, 22, 24, 14):  # CTA of kRB x kSplit warps
        variants.append((1000 + code, 0))
    seen = set()
    for var, grid in variants:
        if (var, grid) in seen:
            continue
        seen.add((var, grid))

        def launch(i, var=var, grid=grid):
            q, k, v = qkv[i]
            st = lib.exp_attention_f16(var, grid, q.data_ptr(), k.data_ptr(), v.data_ptr(),
                                       outs[i].data_ptr(), seqs, HEADS, n, hd, scale, 0, stream())
            if st:
                raise RuntimeError(f"status {st}")

        outs[0].fill_(float("nan"))
        try:
            launch(0)
        except RuntimeError as e:
            print(f"   variant {var} grid {grid}: {e}")
            continue
        torch.cuda.synchronize()
        err = ((outs[0].double() - ref).abs().max() / ref.abs().max()).item()
        us, _ = time_graph(launch, n_sets, INNER, REPS)
        row = {**base, "variant": var, "grid": grid, "us": us, "err": err, "vs_sdpa": best / us,
               "pct_copy": 100 * set_bytes / (us * 1e-6) / 1e9 / copy_gbs}
        results.append(row)
        print(f"   variant {var:3d} grid {grid:4d}: {us:6.2f} us  {best / us:4.2f}x SDPA  "
              f"vs same-size copy {base['copy_us'] / us:4.2f}  err {err:.1e}", flush=True)


def main() -> int:
    torch.backends.cuda.matmul.allow_tf32 = False
    ceil = ceilings(REPS)
    print(f"ceilings {ceil}", flush=True)
    results: list = []
    which = sys.argv[1:] or ["ln", "attn"]
    if "attn" in which:
        if "sweep" in which:
            attention_correctness()
        attention_rows(results, ceil["copy_gbs"])
    if "ln" in which:
        layernorm_rows(results, ceil["copy_gbs"])
    out = Path(os.environ.get("OUT", "."))
    (out / "variants.json").write_text(json.dumps({"ceilings": ceil, "rows": results}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Tuning experiment: launch one attention variant a few times eagerly, for Nsight Compute.

    python profile_variants.py VARIANT GRID BATCH N HD
Each launch uses a different input set (so a profiled launch is not the first touch of its
inputs); run under `ncu --launch-skip 4 --launch-count 1 -k regex:attention ...`.
"""

from __future__ import annotations

import ctypes
import os
import sys

import torch

HEADS = 4


def main() -> int:
    variant, grid, b, n, hd = (int(a) for a in sys.argv[1:6])
    lib = ctypes.CDLL(os.environ.get("EXP_LIB", "exp_kernels.so"))
    p = ctypes.c_void_p
    lib.exp_attention_f16.argtypes = [ctypes.c_int, ctypes.c_int, p, p, p, p, ctypes.c_int, ctypes.c_int,
                                      ctypes.c_int, ctypes.c_int, ctypes.c_float, ctypes.c_int, p]
    seqs = 4 * b
    sets = [torch.randn(3, seqs, HEADS, n, hd, device="cuda").half() for _ in range(8)]
    outs = [torch.empty(seqs, HEADS, n, hd, device="cuda", dtype=torch.float16) for _ in range(8)]
    for i in range(8):
        q, k, v = sets[i]
        st = lib.exp_attention_f16(variant, grid, q.data_ptr(), k.data_ptr(), v.data_ptr(), outs[i].data_ptr(),
                                   seqs, HEADS, n, hd, hd**-0.5, 0, torch.cuda.current_stream().cuda_stream)
        if st:
            raise RuntimeError(f"status {st}")
    torch.cuda.synchronize()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

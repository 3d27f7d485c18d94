"""The plugin library's kernels against PyTorch in float64, on a CUDA GPU.

Relative error here is max|out - ref| / max|ref| over the whole output, with ref computed in
float64 from the same (FP16- or FP32-valued) inputs. Bounds: FP32 <= 1e-5, FP16 <= 2e-3.
Every output is poisoned with NaN first, so an element the kernel never wrote fails the test.
Inputs are fresh random draws per case (never zeros), with non-trivial gamma/beta and a
shifted mean for LayerNorm, and attention logits large enough to make softmax peaky.

Skipped with the reason when torch, a CUDA device or the built library is missing:
build with `cmake -S plugins -B plugins/build && cmake --build plugins/build -j`, or set
REPO_GEN_PLUGIN_LIB.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch", reason="torch is not installed")
if not torch.cuda.is_available():
    pytest.skip("no CUDA device visible to torch", allow_module_level=True)

from repo_gen.errors import MissingDependency  # noqa: E402
from repo_gen.plugins import KernelLibrary  # noqa: E402

pytestmark = pytest.mark.gpu

TOL = {torch.float32: 1e-5, torch.float16: 2e-3}
INVALID_VALUE = 1  # cudaErrorInvalidValue

# MobileViT transformer widths (S, XS, XXS) plus edges of the supported range and widths that
# take the scalar fallback (not a multiple of the 16-byte vector).
LN_WIDTHS = [16, 64, 80, 96, 120, 144, 192, 240, 256, 384, 520, 1024, 17, 100, 1000]
LN_ROWS = [1, 37, 1024, 16384, 20011]  # 20011 (prime): a partly filled last block at every group size
# Head dims: MobileViT's 16/20/24/36/48/60 plus powers of two and two that need the narrow
# vector paths (18: 4-byte chunks, 17: scalar).
HEAD_DIMS = [16, 17, 18, 20, 24, 32, 36, 48, 60, 64]
TOKENS_FIRST_CLASS = [16, 64, 256]
TOKENS_EDGES = [1, 7, 17, 31, 32, 33, 100, 1024]


@pytest.fixture(scope="module")
def lib() -> KernelLibrary:
    try:
        return KernelLibrary()
    except MissingDependency as e:
        pytest.skip(str(e))


def _stream() -> int:
    return torch.cuda.current_stream().cuda_stream


def _rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    return ((out.double() - ref).abs().max() / ref.abs().max()).item()


def _check(out: torch.Tensor, ref: torch.Tensor, dtype: torch.dtype) -> None:
    torch.cuda.synchronize()
    assert not torch.isnan(out).any(), "output has NaN: some elements were never written"
    err = _rel_err(out, ref)
    assert err <= TOL[dtype], f"relative error {err:.3e} > {TOL[dtype]:.0e}"


# ------------------------------------------------------------------------------------------
# LayerNorm
# ------------------------------------------------------------------------------------------
def _layernorm_case(lib, rows: int, d: int, dtype: torch.dtype, *, misalign: bool = False) -> None:
    gen = torch.Generator(device="cuda").manual_seed(rows * 7919 + d)
    base = (torch.randn(rows * d + 1, device="cuda", generator=gen) * 2.0 + 3.0).to(dtype)
    x = (base[1:] if misalign else base[:-1]).view(rows, d)  # base[1:] is 2 or 4 bytes off 16-byte alignment
    gamma = torch.randn(d, device="cuda", generator=gen) * 0.5 + 1.0
    beta = torch.randn(d, device="cuda", generator=gen) * 0.5
    y = torch.full_like(x, float("nan"))
    eps = 1e-5
    status = lib.layernorm(
        x.data_ptr(), gamma.data_ptr(), beta.data_ptr(), y.data_ptr(), rows, d, eps,
        half=dtype == torch.float16, stream=_stream(),
    )
    assert status == 0, lib.error_string(status)
    ref = torch.nn.functional.layer_norm(x.double(), (d,), gamma.double(), beta.double(), eps)
    _check(y, ref, dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("d", LN_WIDTHS)
@pytest.mark.parametrize("rows", LN_ROWS)
def test_layernorm_matches_float64(lib, rows, d, dtype):
    _layernorm_case(lib, rows, d, dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("d", [64, 144, 240])
def test_layernorm_unaligned_pointers_take_the_scalar_path(lib, d, dtype):
    _layernorm_case(lib, 333, d, dtype, misalign=True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize(("b", "n", "d"), [(64, 256, 144), (64, 64, 192), (64, 16, 240)])
def test_layernorm_mobilevit_s_shapes_at_batch_64(lib, b, n, d, dtype):
    _layernorm_case(lib, 4 * b * n, d, dtype)


# ------------------------------------------------------------------------------------------
# Attention
# ------------------------------------------------------------------------------------------
def _attention_ref(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """[..., N, hd] float64 reference: softmax((q * scale) k^T) v."""
    s = (q.double() * scale) @ k.double().transpose(-1, -2)
    return torch.softmax(s, dim=-1) @ v.double()


def _attention_case(lib, batch: int, heads: int, n: int, hd: int, dtype: torch.dtype, packed: bool) -> None:
    gen = torch.Generator(device="cuda").manual_seed(batch * 1_000_003 + heads * 10_007 + n * 101 + hd)
    scale = hd**-0.5
    half = dtype == torch.float16
    if packed:
        qkv = (torch.randn(batch, n, 3, heads, hd, device="cuda", generator=gen) * 1.5).to(dtype)
        o = torch.full((batch, n, heads, hd), float("nan"), device="cuda", dtype=dtype)
        status = lib.attention_packed(
            qkv.data_ptr(), o.data_ptr(), batch, heads, n, hd, scale, half=half, stream=_stream()
        )
        q, k, v = (qkv[:, :, i].permute(0, 2, 1, 3) for i in range(3))
        ref = _attention_ref(q, k, v, scale).permute(0, 2, 1, 3)
    else:
        q, k, v = ((torch.randn(batch, heads, n, hd, device="cuda", generator=gen) * 1.5).to(dtype) for _ in range(3))
        o = torch.full_like(q, float("nan"))
        status = lib.attention(
            q.data_ptr(), k.data_ptr(), v.data_ptr(), o.data_ptr(), batch, heads, n, hd, scale,
            half=half, stream=_stream(),
        )
        ref = _attention_ref(q, k, v, scale)
    assert status == 0, lib.error_string(status)
    _check(o, ref, dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("packed", [False, True], ids=["separate", "packed"])
@pytest.mark.parametrize("hd", HEAD_DIMS)
@pytest.mark.parametrize("n", TOKENS_FIRST_CLASS)
def test_attention_first_class_tokens(lib, n, hd, packed, dtype):
    # batch 3 x 4 heads: 12 pairs, not a multiple of the pairs a CTA serves for short sequences.
    _attention_case(lib, 3, 4, n, hd, dtype, packed)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("hd", [20, 36, 60, 64])
@pytest.mark.parametrize("n", TOKENS_EDGES)
def test_attention_token_counts(lib, n, hd, dtype):
    batch, heads = (1, 2) if n > 256 else (2, 3)
    _attention_case(lib, batch, heads, n, hd, dtype, packed=n % 2 == 1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize(("b", "n", "hd"), [(64, 256, 36), (64, 64, 48), (64, 16, 60)])
def test_attention_mobilevit_s_shapes_at_batch_64(lib, b, n, hd, dtype):
    _attention_case(lib, 4 * b, 4, n, hd, dtype, packed=False)
    _attention_case(lib, 4 * b, 4, n, hd, dtype, packed=True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("hd", HEAD_DIMS)
@pytest.mark.parametrize("n", [16, 33, 48, 64])
def test_attention_large_batch(lib, n, hd, dtype):
    # 333 x 4 = 1332 pairs: the large-batch launch shapes (for 32 < N <= 64 a CTA per pair; the
    # first-class and edge cases above, with few pairs, take the CTA-per-16-rows shape) at every
    # head dim, more CTAs than fit on the chip at once, and a pair count that is no round number.
    _attention_case(lib, 333, 4, n, hd, dtype, packed=hd % 2 == 0)


@pytest.mark.parametrize("packed", [False, True], ids=["separate", "packed"])
@pytest.mark.parametrize("n", [33, 48, 64])
@pytest.mark.parametrize(("batch", "heads"), [(64, 4), (67, 3), (128, 4)])
def test_attention_two_pair_bulk_range(lib, batch, heads, n, packed):
    # hd = 48 with 1.5 to 4 pairs per SM of an H100 (256, 201 and 512 pairs): on Hopper the separate
    # layout takes the two-pair bulk-copy kernel (201: the last CTA's second pair is empty; N < 64:
    # V rows past N zeroed), the packed layout a CTA per pair.
    _attention_case(lib, batch, heads, n, 48, torch.float16, packed)


# ------------------------------------------------------------------------------------------
# Rejections: unsupported shapes return cudaErrorInvalidValue and leave the output alone.
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("rows", "d"), [(4, 8), (4, 15), (4, 1025), (4, 2048), (-1, 64)])
def test_layernorm_rejects_unsupported_shapes(lib, rows, d):
    x = torch.randn(4, max(d, 1), device="cuda")
    g = torch.ones(max(d, 1), device="cuda")
    y = torch.full_like(x, float("nan"))
    status = lib.layernorm(x.data_ptr(), g.data_ptr(), g.data_ptr(), y.data_ptr(), rows, d, 1e-5, half=False)
    assert status == INVALID_VALUE
    torch.cuda.synchronize()
    assert torch.isnan(y).all()


def test_layernorm_rejects_null_pointers(lib):
    x = torch.randn(4, 64, device="cuda")
    assert lib.layernorm(x.data_ptr(), 0, 0, x.data_ptr(), 4, 64, 1e-5, half=True) == INVALID_VALUE


@pytest.mark.parametrize(
    ("batch", "heads", "n", "hd", "scale"),
    [(2, 4, 16, 8, 0.1), (2, 4, 16, 15, 0.1), (2, 4, 16, 65, 0.1), (2, 4, 16, 128, 0.1),
     (2, 4, 0, 32, 0.1), (2, 4, 1025, 32, 0.1), (2, 0, 16, 32, 0.1), (2, 4, 16, 32, 0.0), (-1, 4, 16, 32, 0.1)],
)
@pytest.mark.parametrize("half", [False, True], ids=["fp32", "fp16"])
def test_attention_rejects_unsupported_shapes(lib, batch, heads, n, hd, scale, half):
    t = torch.randn(4096, device="cuda")
    o = torch.full_like(t, float("nan"))
    p = t.data_ptr()
    assert lib.attention(p, p, p, o.data_ptr(), batch, heads, n, hd, scale, half=half) == INVALID_VALUE
    assert lib.attention_packed(p, o.data_ptr(), batch, heads, n, hd, scale, half=half) == INVALID_VALUE
    torch.cuda.synchronize()
    assert torch.isnan(o).all()

// Tuning experiment (not part of the plugin library): the library's attention kernels compiled
// into one translation unit with an entry point that picks a kernel variant and grid size
// explicitly, so one device call can time them side by side. Driven by kernel_variants.py.
#include "attentionPlugin/attentionKernel.cu"

namespace
{
using mvt::AttentionParams;

// hd = 48 with 16-byte vectors (the N = 64 shape of MobileViT-S): CTA shapes kRB x kSplit warps.
cudaError_t singleTile(int32_t code, AttentionParams<__half> const& p, cudaStream_t s)
{
    switch (code)
    {
    case 41: return mvt::launchSingleTile<48, 4, 1, 8>(p, s);
    case 21: return mvt::launchSingleTile<48, 2, 1, 8>(p, s);
    case 22: return mvt::launchSingleTile<48, 2, 2, 8>(p, s);
    case 24: return mvt::launchSingleTile<48, 2, 4, 8>(p, s);
    case 14: return mvt::launchSingleTile<48, 1, 4, 8>(p, s);
    default: return cudaErrorInvalidValue;
    }
}
} // namespace

extern "C" __attribute__((visibility("default"))) int exp_attention_f16(int variant, int grid, void const* q,
    void const* k, void const* v, void* o, int batch, int heads, int n, int hd, float scale, int packed, void* stream)
{
    auto const* qh = static_cast<__half const*>(q);
    auto* oh = static_cast<__half*>(o);
    AttentionParams<__half> p;
    if (packed != 0)
    {
        p = mvt::packedLayoutParams<__half>(qh, oh, batch, heads, n, hd, scale);
    }
    else
    {
        p.q = qh;
        p.k = static_cast<__half const*>(k);
        p.v = static_cast<__half const*>(v);
        p.o = oh;
        p.qStride = mvt::separateLayoutStrides(heads, n, hd);
        p.kStride = p.qStride;
        p.vStride = p.qStride;
        p.oStride = p.qStride;
        p.batch = batch;
        p.heads = heads;
        p.seqLen = n;
        p.headDim = hd;
        p.scale = scale;
    }
    auto* s = static_cast<cudaStream_t>(stream);
    if (variant == 0)
    {
        return static_cast<int>(mvt::launchAttention<__half>(p, s));
    }
    int32_t const vec = mvt::f16VectorWidth(p);
    if ((vec != 8 && vec != 4) || n > 64)
    {
        return static_cast<int>(cudaErrorInvalidValue);
    }
    int32_t const kHd = mvt::paddedHeadDim(hd);
    if (variant == 1) // the previous kernel for N <= 64 (4-warp CTA, groups of kWpg warps)
    {
        int32_t const wpg = n <= 16 ? 1 : (n <= 32 ? 2 : 4);
        switch (kHd * 100 + wpg * 10 + vec)
        {
        case 4848: return static_cast<int>(mvt::launchF16<48, 4, 8, 1>(p, s));
        case 6414: return static_cast<int>(mvt::launchF16<64, 1, 4, 1>(p, s));
        default: return static_cast<int>(cudaErrorInvalidValue);
        }
    }
    // variant 1RS: the N <= 64 kernel with kRB = R, kSplit = S (1014: R 1, S 4)
    if (kHd != 48 || vec != 8 || n <= 32 || grid != 0)
    {
        return static_cast<int>(cudaErrorInvalidValue);
    }
    return static_cast<int>(singleTile(variant - 1000, p, s));
}

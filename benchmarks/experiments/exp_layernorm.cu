// Tuning experiment (not part of the plugin library): the library's LayerNorm kernels with the
// thread-group size and the L2 prefetch hint chosen explicitly. Driven by kernel_variants.py.
#include "layerNormPlugin/layerNormKernel.cu"

// kind 0: the library's dispatch; 2: its vectorised kernel with `tpr` threads per row forced;
// 3: the same without the L2 prefetch hint; 4: the library's dispatch without the hint.
// `code` is unused.
extern "C" __attribute__((visibility("default"))) int exp_layernorm_f16(int kind, int tpr, int code,
    void const* x, float const* gamma, float const* beta, void* y, int64_t n, int d, float eps, void* stream)
{
    auto const* xh = static_cast<__half const*>(x);
    auto* yh = static_cast<__half*>(y);
    auto* s = static_cast<cudaStream_t>(stream);
    if (kind == 0)
    {
        return static_cast<int>(mvt::launchLayerNorm<__half>(xh, gamma, beta, yh, n, d, eps, s));
    }
    if (d % 8 != 0)
    {
        return static_cast<int>(cudaErrorInvalidValue);
    }
    if (kind == 4) // the library's policy without the L2 prefetch hint
    {
        return static_cast<int>(mvt::launchVecPolicy<__half, false>(xh, gamma, beta, yh, n, d, eps, s));
    }
    int32_t const nv = (d / 8 + tpr - 1) / tpr;
    if (kind == 3) // tpr 4 or 8 without the L2 256-byte prefetch hint (d = 144: nv 5 / 3; 192: 6 / 3)
    {
        switch (tpr * 10 + nv)
        {
        case 45: return static_cast<int>(mvt::launchVec<__half, 4, 5, false>(xh, gamma, beta, yh, n, d, eps, s));
        case 46: return static_cast<int>(mvt::launchVec<__half, 4, 6, false>(xh, gamma, beta, yh, n, d, eps, s));
        case 83: return static_cast<int>(mvt::launchVec<__half, 8, 3, false>(xh, gamma, beta, yh, n, d, eps, s));
        default: return static_cast<int>(cudaErrorInvalidValue);
        }
    }
    switch (tpr)
    {
    case 4: return static_cast<int>(mvt::dispatchNv<__half, 4>(nv, xh, gamma, beta, yh, n, d, eps, s));
    case 8: return static_cast<int>(mvt::dispatchNv<__half, 8>(nv, xh, gamma, beta, yh, n, d, eps, s));
    case 16: return static_cast<int>(mvt::dispatchNv<__half, 16>(nv, xh, gamma, beta, yh, n, d, eps, s));
    case 32: return static_cast<int>(mvt::dispatchNv<__half, 32>(nv, xh, gamma, beta, yh, n, d, eps, s));
    default: return static_cast<int>(cudaErrorInvalidValue);
    }
}

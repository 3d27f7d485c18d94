// The C ABI declared in mobilevitPlugins.h: argument checks, then the templated launchers.
#include "api/mobilevitPlugins.h"

#include "attentionPlugin/attentionKernel.h"
#include "layerNormPlugin/layerNormKernel.h"

#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

namespace
{
constexpr int kAbiVersion = 1;

cudaStream_t asStream(void* stream)
{
    return static_cast<cudaStream_t>(stream);
}

template <typename T>
int separate(T const* q, T const* k, T const* v, T* o, int32_t batch, int32_t heads, int32_t seqLen,
    int32_t headDim, float scale, void* stream)
{
    return static_cast<int>(mvt::launchAttention<T>(
        mvt::separateLayoutParams<T>(q, k, v, o, batch, heads, seqLen, headDim, scale), asStream(stream)));
}
} // namespace

extern "C"
{
    int mvt_abi_version(void)
    {
        return kAbiVersion;
    }

    char const* mvt_error_string(int status)
    {
        return cudaGetErrorString(static_cast<cudaError_t>(status));
    }

    int mvt_layernorm_f32(float const* x, float const* gamma, float const* beta, float* y, int64_t rows, int32_t d,
        float epsilon, void* stream)
    {
        return static_cast<int>(mvt::launchLayerNorm<float>(x, gamma, beta, y, rows, d, epsilon, asStream(stream)));
    }

    int mvt_layernorm_f16(void const* x, float const* gamma, float const* beta, void* y, int64_t rows, int32_t d,
        float epsilon, void* stream)
    {
        return static_cast<int>(mvt::launchLayerNorm<__half>(static_cast<__half const*>(x), gamma, beta,
            static_cast<__half*>(y), rows, d, epsilon, asStream(stream)));
    }

    int mvt_attention_f32(float const* q, float const* k, float const* v, float* o, int32_t batch, int32_t heads,
        int32_t seq_len, int32_t head_dim, float scale, void* stream)
    {
        return separate<float>(q, k, v, o, batch, heads, seq_len, head_dim, scale, stream);
    }

    int mvt_attention_f16(void const* q, void const* k, void const* v, void* o, int32_t batch, int32_t heads,
        int32_t seq_len, int32_t head_dim, float scale, void* stream)
    {
        return separate<__half>(static_cast<__half const*>(q), static_cast<__half const*>(k),
            static_cast<__half const*>(v), static_cast<__half*>(o), batch, heads, seq_len, head_dim, scale, stream);
    }

    int mvt_attention_packed_f32(float const* qkv, float* o, int32_t batch, int32_t heads, int32_t seq_len,
        int32_t head_dim, float scale, void* stream)
    {
        return static_cast<int>(mvt::launchAttention<float>(
            mvt::packedLayoutParams<float>(qkv, o, batch, heads, seq_len, head_dim, scale), asStream(stream)));
    }

    int mvt_attention_packed_f16(void const* qkv, void* o, int32_t batch, int32_t heads, int32_t seq_len,
        int32_t head_dim, float scale, void* stream)
    {
        return static_cast<int>(mvt::launchAttention<__half>(
            mvt::packedLayoutParams<__half>(
                static_cast<__half const*>(qkv), static_cast<__half*>(o), batch, heads, seq_len, head_dim, scale),
            asStream(stream)));
    }
} // extern "C"

/*
 * C ABI of libmobilevit_plugins.so: the kernels without TensorRT.
 *
 * All pointers are device pointers; `stream` is a cudaStream_t passed as void* (NULL = legacy
 * default stream). Every function returns a cudaError_t as int: 0 on success,
 * 1 (cudaErrorInvalidValue) for an unsupported shape, a null pointer or a bad argument, or the
 * launch error. Nothing here synchronises, allocates or aborts.
 *
 * LayerNorm: x and y are `rows` contiguous rows of `d` elements (16 <= d <= 1024);
 *   gamma and beta are float32 [d]; statistics in float32. y may not alias x.
 * Attention: O = softmax((Q * scale) K^T) V per (sequence, head) pair,
 *   1 <= seq_len <= 1024, 16 <= head_dim <= 64, scale > 0.
 *   mvt_attention_*:        q, k, v, o contiguous [batch, heads, seq_len, head_dim]
 *                           (batch*heads independent [seq_len, head_dim] matrices).
 *   mvt_attention_packed_*: qkv contiguous [batch, seq_len, 3, heads, head_dim] (the QKV linear
 *                           output [batch, seq_len, 3*C], C = heads*head_dim), o contiguous
 *                           [batch, seq_len, heads, head_dim] (= [batch, seq_len, C]).
 */
#ifndef MOBILEVIT_PLUGINS_H
#define MOBILEVIT_PLUGINS_H

#include <stdint.h>

#if defined(__GNUC__)
#define MVT_API __attribute__((visibility("default")))
#else
#define MVT_API
#endif

#ifdef __cplusplus
extern "C"
{
#endif

//! Version of this C ABI; bumped on any incompatible change.
MVT_API int mvt_abi_version(void);

//! Text for a status returned by the functions below (cudaGetErrorString).
MVT_API char const* mvt_error_string(int status);

MVT_API int mvt_layernorm_f32(float const* x, float const* gamma, float const* beta, float* y, int64_t rows,
    int32_t d, float epsilon, void* stream);

//! x and y are IEEE half.
MVT_API int mvt_layernorm_f16(void const* x, float const* gamma, float const* beta, void* y, int64_t rows,
    int32_t d, float epsilon, void* stream);

MVT_API int mvt_attention_f32(float const* q, float const* k, float const* v, float* o, int32_t batch,
    int32_t heads, int32_t seq_len, int32_t head_dim, float scale, void* stream);

//! q, k, v and o are IEEE half.
MVT_API int mvt_attention_f16(void const* q, void const* k, void const* v, void* o, int32_t batch,
    int32_t heads, int32_t seq_len, int32_t head_dim, float scale, void* stream);

MVT_API int mvt_attention_packed_f32(float const* qkv, float* o, int32_t batch, int32_t heads, int32_t seq_len,
    int32_t head_dim, float scale, void* stream);

//! qkv and o are IEEE half.
MVT_API int mvt_attention_packed_f16(void const* qkv, void* o, int32_t batch, int32_t heads, int32_t seq_len,
    int32_t head_dim, float scale, void* stream);

#ifdef __cplusplus
}
#endif

#endif // MOBILEVIT_PLUGINS_H

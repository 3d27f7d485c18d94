/*
 * Fused attention O = softmax((Q * scale) K^T) V for many independent (sequence, head) pairs.
 *
 * Each pair owns `seqLen` query, key and value rows of `headDim` elements (contiguous within a
 * row). Where the rows of one pair and of the different pairs sit is given by element strides,
 * so one kernel serves both layouts the C ABI and the TensorRT plugin expose:
 *   - separate: q, k, v, o are contiguous [batch, heads, seqLen, headDim] tensors;
 *   - packed:   q, k, v are views into one [batch, seqLen, 3, heads, headDim] tensor (the output of
 *               the QKV linear layer), and o is [batch, seqLen, heads, headDim] (= [batch, seqLen, C]).
 * Supported: 1 <= seqLen <= 1024, 16 <= headDim <= 64 (any value; padded internally to a
 * multiple of 16). T is float (FP32 arithmetic throughout) or half (tensor-core products with
 * FP32 accumulation, FP32 softmax, P rounded to FP16 for the P.V product).
 */
#pragma once

#include <cstdint>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

namespace mvt
{
constexpr int32_t kAttentionMinHeadDim = 16;
constexpr int32_t kAttentionMaxHeadDim = 64;
constexpr int32_t kAttentionMaxSeqLen = 1024;

struct AttentionStrides
{
    int64_t batch;  //!< elements between sequence s and s + 1
    int64_t head;   //!< elements between head h and h + 1
    int64_t token;  //!< elements between token n and n + 1
};

template <typename T>
struct AttentionParams
{
    T const* q{nullptr};
    T const* k{nullptr};
    T const* v{nullptr};
    T* o{nullptr};
    AttentionStrides qStride{};
    AttentionStrides kStride{};
    AttentionStrides vStride{};
    AttentionStrides oStride{};
    int32_t batch{0};
    int32_t heads{0};
    int32_t seqLen{0};
    int32_t headDim{0};
    float scale{1.F};
};

//! Strides of the "separate" layout: contiguous [batch, heads, seqLen, headDim].
AttentionStrides separateLayoutStrides(int32_t heads, int32_t seqLen, int32_t headDim);

//! Fill params for the "packed" layout from one qkv pointer and one output pointer.
template <typename T>
AttentionParams<T> packedLayoutParams(
    T const* qkv, T* o, int32_t batch, int32_t heads, int32_t seqLen, int32_t headDim, float scale);

//! Fill params for the "separate" layout: q, k, v, o each contiguous [batch, heads, seqLen, headDim].
template <typename T>
AttentionParams<T> separateLayoutParams(T const* q, T const* k, T const* v, T* o, int32_t batch, int32_t heads,
    int32_t seqLen, int32_t headDim, float scale);

//! cudaErrorInvalidValue for an unsupported shape or a null pointer; otherwise the launch status.
template <typename T>
cudaError_t launchAttention(AttentionParams<T> const& params, cudaStream_t stream);
} // namespace mvt

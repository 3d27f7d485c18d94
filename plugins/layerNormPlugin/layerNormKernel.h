/*
 * LayerNorm over the last dimension: y = (x - mean(x)) / sqrt(var(x) + eps) * gamma + beta,
 * for `rows` contiguous rows of `d` elements (16 <= d <= 1024). T is float or half; gamma and
 * beta are float32 device arrays of d elements; statistics are accumulated in float32.
 */
#pragma once

#include <cstdint>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

namespace mvt
{
constexpr int32_t kLayerNormMinWidth = 16;
constexpr int32_t kLayerNormMaxWidth = 1024;

// cudaErrorInvalidValue for an unsupported shape or a null pointer; otherwise the launch status.
template <typename T>
cudaError_t launchLayerNorm(T const* x, float const* gamma, float const* beta, T* y, int64_t rows, int32_t d,
    float epsilon, cudaStream_t stream);
} // namespace mvt

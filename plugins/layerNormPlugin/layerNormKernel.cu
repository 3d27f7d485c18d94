#include "layerNormKernel.h"

#include "common/cudaCheck.h"
#include "common/deviceInfo.h"

#include <cuda_fp16.h>

namespace mvt
{
namespace
{
constexpr int32_t kThreads = 128;

// 16-byte vector of T: 8 halves or 4 floats.
template <typename T>
struct Vec;

template <>
struct Vec<float>
{
    static constexpr int32_t kSize = 4;
    using Storage = float4;
    __device__ static void unpack(Storage const& s, float (&out)[4])
    {
        out[0] = s.x;
        out[1] = s.y;
        out[2] = s.z;
        out[3] = s.w;
    }
    __device__ static Storage pack(float const (&in)[4])
    {
        return make_float4(in[0], in[1], in[2], in[3]);
    }
};

template <>
struct Vec<__half>
{
    static constexpr int32_t kSize = 8;
    using Storage = uint4;
    __device__ static void unpack(Storage const& s, float (&out)[8])
    {
        __half2 const* h = reinterpret_cast<__half2 const*>(&s);
#pragma unroll
        for (int32_t i = 0; i < 4; ++i)
        {
            float2 const f = __half22float2(h[i]);
            out[2 * i] = f.x;
            out[2 * i + 1] = f.y;
        }
    }
    __device__ static Storage pack(float const (&in)[8])
    {
        Storage s;
        __half2* h = reinterpret_cast<__half2*>(&s);
#pragma unroll
        for (int32_t i = 0; i < 4; ++i)
        {
            h[i] = __floats2half2_rn(in[2 * i], in[2 * i + 1]);
        }
        return s;
    }
};

template <int32_t kWidth>
__device__ __forceinline__ float groupSum(float v)
{
#pragma unroll
    for (int32_t offset = kWidth / 2; offset > 0; offset /= 2)
    {
        v += __shfl_xor_sync(0xffffffffu, v, offset);
    }
    return v;
}

// 16-byte streaming load; with kL2Prefetch the L2 is asked to fetch 256-byte blocks (rows of
// neighbouring groups share them: fewer, larger DRAM requests; about 3% at MobileViT-S's
// B = 64 widths on an H100).
template <typename S, bool kL2Prefetch>
__device__ __forceinline__ S loadStream(S const* p)
{
    if constexpr (kL2Prefetch)
    {
        uint4 r;
        asm("ld.global.cs.L2::256B.v4.u32 {%0, %1, %2, %3}, [%4];\n"
            : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
            : "l"(p));
        return *reinterpret_cast<S const*>(&r);
    }
    else
    {
        return __ldcs(p);
    }
}

// Vectorised path: d % Vec<T>::kSize == 0 and 16-byte aligned rows. A group of kTpr threads
// owns one row and keeps it in registers (kNv 16-byte vectors per thread), so x is read once and
// y written once; mean and variance are two exact passes over the registers. Loads are
// streaming (evict-first) and, with kL2Prefetch, ask the L2 for 256-byte blocks.
template <typename T, int32_t kTpr, int32_t kNv, bool kL2Prefetch>
__global__ void __launch_bounds__(kThreads) layerNormVecKernel(T const* __restrict__ x,
    float const* __restrict__ gamma, float const* __restrict__ beta, T* __restrict__ y, int64_t rows, int32_t d,
    float epsilon)
{
    using V = Vec<T>;
    using S = typename V::Storage;
    constexpr int32_t kV = V::kSize;
    int32_t const lane = threadIdx.x % kTpr;
    int64_t const row = static_cast<int64_t>(blockIdx.x) * (kThreads / kTpr) + threadIdx.x / kTpr;
    bool const rowValid = row < rows;
    int32_t const nVec = d / kV;

    float v[kNv][kV];
    S const* const xr = reinterpret_cast<S const*>(x) + row * nVec;
#pragma unroll
    for (int32_t i = 0; i < kNv; ++i)
    {
        int32_t const c = lane + i * kTpr;
        if (rowValid && c < nVec)
        {
            V::unpack(loadStream<S, kL2Prefetch>(xr + c), v[i]);
        }
        else
        {
#pragma unroll
            for (int32_t j = 0; j < kV; ++j)
            {
                v[i][j] = 0.F;
            }
        }
    }
    float sum = 0.F;
#pragma unroll
    for (int32_t i = 0; i < kNv; ++i)
    {
#pragma unroll
        for (int32_t j = 0; j < kV; ++j)
        {
            sum += v[i][j];
        }
    }
    float const mean = groupSum<kTpr>(sum) / static_cast<float>(d);
    float sq = 0.F;
#pragma unroll
    for (int32_t i = 0; i < kNv; ++i)
    {
        if (lane + i * kTpr < nVec)
        {
#pragma unroll
            for (int32_t j = 0; j < kV; ++j)
            {
                float const c = v[i][j] - mean;
                sq += c * c;
            }
        }
    }
    float const rstd = rsqrtf(groupSum<kTpr>(sq) / static_cast<float>(d) + epsilon);
    if (!rowValid)
    {
        return;
    }
    S* const yr = reinterpret_cast<S*>(y) + row * nVec;
#pragma unroll
    for (int32_t i = 0; i < kNv; ++i)
    {
        int32_t const c = lane + i * kTpr;
        if (c < nVec)
        {
            float out[kV];
#pragma unroll
            for (int32_t j = 0; j < kV; j += 4)
            {
                float4 const g = __ldg(reinterpret_cast<float4 const*>(gamma + c * kV + j));
                float4 const b = __ldg(reinterpret_cast<float4 const*>(beta + c * kV + j));
                out[j + 0] = (v[i][j + 0] - mean) * rstd * g.x + b.x;
                out[j + 1] = (v[i][j + 1] - mean) * rstd * g.y + b.y;
                out[j + 2] = (v[i][j + 2] - mean) * rstd * g.z + b.z;
                out[j + 3] = (v[i][j + 3] - mean) * rstd * g.w + b.w;
            }
            __stcs(yr + c, V::pack(out));
        }
    }
}

__device__ __forceinline__ float toFloat(float v)
{
    return v;
}
__device__ __forceinline__ float toFloat(__half v)
{
    return __half2float(v);
}
template <typename T>
__device__ __forceinline__ T fromFloat(float v);
template <>
__device__ __forceinline__ float fromFloat<float>(float v)
{
    return v;
}
template <>
__device__ __forceinline__ __half fromFloat<__half>(float v)
{
    return __float2half_rn(v);
}

// Fallback for widths that are not a multiple of the vector size or unaligned pointers:
// one warp per row, scalar accesses, the row re-read from cache for each pass.
template <typename T>
__global__ void __launch_bounds__(kThreads) layerNormScalarKernel(T const* __restrict__ x,
    float const* __restrict__ gamma, float const* __restrict__ beta, T* __restrict__ y, int64_t rows, int32_t d,
    float epsilon)
{
    int32_t const lane = threadIdx.x % 32;
    int64_t const row = static_cast<int64_t>(blockIdx.x) * (kThreads / 32) + threadIdx.x / 32;
    if (row >= rows)
    {
        return; // whole warp leaves together: row is uniform across the warp
    }
    T const* xr = x + row * d;
    float sum = 0.F;
    for (int32_t c = lane; c < d; c += 32)
    {
        sum += toFloat(xr[c]);
    }
    float const mean = groupSum<32>(sum) / static_cast<float>(d);
    float sq = 0.F;
    for (int32_t c = lane; c < d; c += 32)
    {
        float const t = toFloat(xr[c]) - mean;
        sq += t * t;
    }
    float const rstd = rsqrtf(groupSum<32>(sq) / static_cast<float>(d) + epsilon);
    T* yr = y + row * d;
    for (int32_t c = lane; c < d; c += 32)
    {
        yr[c] = fromFloat<T>((toFloat(xr[c]) - mean) * rstd * gamma[c] + beta[c]);
    }
}

template <typename T, int32_t kTpr, int32_t kNv, bool kL2Prefetch = true>
cudaError_t launchVec(T const* x, float const* gamma, float const* beta, T* y, int64_t rows, int32_t d, float eps,
    cudaStream_t stream)
{
    constexpr int32_t kRowsPerBlock = kThreads / kTpr;
    int64_t const blocks = (rows + kRowsPerBlock - 1) / kRowsPerBlock;
    MVT_CHECK_ARG(blocks <= 0x7fffffffLL, cudaErrorInvalidValue);
    layerNormVecKernel<T, kTpr, kNv, kL2Prefetch>
        <<<static_cast<uint32_t>(blocks), kThreads, 0, stream>>>(x, gamma, beta, y, rows, d, eps);
    return lastLaunchStatus();
}

// Dispatch over the number of 16-byte vectors each thread holds (1..8).
template <typename T, int32_t kTpr, bool kL2Prefetch = true>
cudaError_t dispatchNv(int32_t nv, T const* x, float const* gamma, float const* beta, T* y, int64_t rows, int32_t d,
    float eps, cudaStream_t stream)
{
    switch (nv)
    {
    case 1: return launchVec<T, kTpr, 1, kL2Prefetch>(x, gamma, beta, y, rows, d, eps, stream);
    case 2: return launchVec<T, kTpr, 2, kL2Prefetch>(x, gamma, beta, y, rows, d, eps, stream);
    case 3: return launchVec<T, kTpr, 3, kL2Prefetch>(x, gamma, beta, y, rows, d, eps, stream);
    case 4: return launchVec<T, kTpr, 4, kL2Prefetch>(x, gamma, beta, y, rows, d, eps, stream);
    case 5: return launchVec<T, kTpr, 5, kL2Prefetch>(x, gamma, beta, y, rows, d, eps, stream);
    case 6: return launchVec<T, kTpr, 6, kL2Prefetch>(x, gamma, beta, y, rows, d, eps, stream);
    case 7: return launchVec<T, kTpr, 7, kL2Prefetch>(x, gamma, beta, y, rows, d, eps, stream);
    case 8: return launchVec<T, kTpr, 8, kL2Prefetch>(x, gamma, beta, y, rows, d, eps, stream);
    default: return cudaErrorInvalidValue;
    }
}

// The vectorised path for valid, aligned arguments. Threads per row: the smallest group that
// keeps at most 8 vectors per thread (more rows, hence more independent loads, in flight per SM),
// widened while that would leave fewer than two blocks per SM so small inputs still spread over
// the whole chip.
template <typename T, bool kL2Prefetch>
cudaError_t launchVecPolicy(T const* x, float const* gamma, float const* beta, T* y, int64_t rows, int32_t d,
    float epsilon, cudaStream_t stream)
{
    int32_t const nVec = d / Vec<T>::kSize;
    int64_t const minBlocks = 2 * static_cast<int64_t>(multiProcessorCount());
    int32_t tpr = 4;
    while (tpr < 32 && (nVec > 8 * tpr || (rows + kThreads / tpr - 1) / (kThreads / tpr) < minBlocks))
    {
        tpr *= 2;
    }
    int32_t const nv = (nVec + tpr - 1) / tpr;
    switch (tpr)
    {
    case 4: return dispatchNv<T, 4, kL2Prefetch>(nv, x, gamma, beta, y, rows, d, epsilon, stream);
    case 8: return dispatchNv<T, 8, kL2Prefetch>(nv, x, gamma, beta, y, rows, d, epsilon, stream);
    case 16: return dispatchNv<T, 16, kL2Prefetch>(nv, x, gamma, beta, y, rows, d, epsilon, stream);
    default: return dispatchNv<T, 32, kL2Prefetch>(nv, x, gamma, beta, y, rows, d, epsilon, stream);
    }
}
} // namespace

template <typename T>
cudaError_t launchLayerNorm(T const* x, float const* gamma, float const* beta, T* y, int64_t rows, int32_t d,
    float epsilon, cudaStream_t stream)
{
    MVT_CHECK_ARG(x != nullptr && gamma != nullptr && beta != nullptr && y != nullptr, cudaErrorInvalidValue);
    MVT_CHECK_ARG(d >= kLayerNormMinWidth && d <= kLayerNormMaxWidth, cudaErrorInvalidValue);
    MVT_CHECK_ARG(rows >= 0, cudaErrorInvalidValue);
    MVT_CHECK_ARG(epsilon >= 0.F, cudaErrorInvalidValue);
    if (rows == 0)
    {
        return cudaSuccess;
    }
    constexpr int32_t kV = Vec<T>::kSize;
    bool const vectorOk = d % kV == 0 && isAligned(x, 16) && isAligned(y, 16) && isAligned(gamma, 16)
        && isAligned(beta, 16) && (d * sizeof(T)) % 16 == 0;
    if (!vectorOk)
    {
        int64_t const blocks = (rows + kThreads / 32 - 1) / (kThreads / 32);
        MVT_CHECK_ARG(blocks <= 0x7fffffffLL, cudaErrorInvalidValue);
        layerNormScalarKernel<T>
            <<<static_cast<uint32_t>(blocks), kThreads, 0, stream>>>(x, gamma, beta, y, rows, d, epsilon);
        return lastLaunchStatus();
    }
    return launchVecPolicy<T, true>(x, gamma, beta, y, rows, d, epsilon, stream);
}

template cudaError_t launchLayerNorm<float>(
    float const*, float const*, float const*, float*, int64_t, int32_t, float, cudaStream_t);
template cudaError_t launchLayerNorm<__half>(
    __half const*, float const*, float const*, __half*, int64_t, int32_t, float, cudaStream_t);
} // namespace mvt

/*
 * Properties of the current CUDA device that launchers size their grids with, read once per
 * device and cached (thread-safe: concurrent first calls just read the attribute twice).
 */
#pragma once

#include <atomic>
#include <cstdint>
#include <cuda_runtime_api.h>

namespace mvt
{
constexpr int32_t kMaxCachedDevices = 64;
constexpr int32_t kFallbackMultiProcessors = 132;

// Attribute `kAttr` of the current device, read once per device (`fallback` when it cannot be read).
template <cudaDeviceAttr kAttr>
inline int32_t cachedDeviceAttribute(int32_t fallback) noexcept
{
    static std::atomic<int32_t> cache[kMaxCachedDevices] = {};
    int32_t device = 0;
    if (cudaGetDevice(&device) != cudaSuccess || device < 0 || device >= kMaxCachedDevices)
    {
        return fallback;
    }
    int32_t value = cache[device].load(std::memory_order_relaxed);
    if (value == 0)
    {
        if (cudaDeviceGetAttribute(&value, kAttr, device) != cudaSuccess || value <= 0)
        {
            return fallback;
        }
        cache[device].store(value, std::memory_order_relaxed);
    }
    return value;
}

// Multiprocessor count of the current device (132 when it cannot be read).
inline int32_t multiProcessorCount() noexcept
{
    return cachedDeviceAttribute<cudaDevAttrMultiProcessorCount>(kFallbackMultiProcessors);
}

// Major compute capability of the current device (0 when it cannot be read).
inline int32_t computeCapabilityMajor() noexcept
{
    return cachedDeviceAttribute<cudaDevAttrComputeCapabilityMajor>(0);
}
} // namespace mvt

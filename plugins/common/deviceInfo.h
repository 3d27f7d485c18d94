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

// Multiprocessor count of the current device (132 when it cannot be read).
inline int32_t multiProcessorCount() noexcept
{
    static std::atomic<int32_t> cache[kMaxCachedDevices] = {};
    int32_t device = 0;
    if (cudaGetDevice(&device) != cudaSuccess || device < 0 || device >= kMaxCachedDevices)
    {
        return kFallbackMultiProcessors;
    }
    int32_t count = cache[device].load(std::memory_order_relaxed);
    if (count == 0)
    {
        if (cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, device) != cudaSuccess || count <= 0)
        {
            return kFallbackMultiProcessors;
        }
        cache[device].store(count, std::memory_order_relaxed);
    }
    return count;
}
} // namespace mvt

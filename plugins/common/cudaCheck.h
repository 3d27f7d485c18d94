/*
 * Error handling shared by the kernels and the C ABI. Nothing here aborts: every check
 * returns a cudaError_t to the caller, which the C ABI hands back as an int and the
 * TensorRT wrappers turn into a logged, non-zero status.
 */
#pragma once

#include <cuda_runtime_api.h>

// Return `err` from the enclosing function when `cond` is false.
#define MVT_CHECK_ARG(cond, err)                                                                                      \
    do                                                                                                                \
    {                                                                                                                 \
        if (!(cond))                                                                                                  \
        {                                                                                                             \
            return (err);                                                                                             \
        }                                                                                                             \
    } while (0)

// Evaluate a CUDA runtime call and return its status from the enclosing function when it failed.
#define MVT_CUDA_RETURN_IF_ERROR(call)                                                                                \
    do                                                                                                                \
    {                                                                                                                 \
        cudaError_t const mvtStatus_ = (call);                                                                        \
        if (mvtStatus_ != cudaSuccess)                                                                                \
        {                                                                                                             \
            return mvtStatus_;                                                                                        \
        }                                                                                                             \
    } while (0)

namespace mvt
{
// Status of the launch just issued (configuration errors show up here, not at the next sync).
inline cudaError_t lastLaunchStatus() noexcept
{
    return cudaGetLastError();
}

inline bool isAligned(void const* ptr, unsigned bytes) noexcept
{
    return (reinterpret_cast<unsigned long long>(ptr) % bytes) == 0;
}
} // namespace mvt

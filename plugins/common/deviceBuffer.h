// Owning device copy of a small host array (plugin weights). Move-only; frees on destruction.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <utility>
#include <vector>

namespace mvt
{
template <typename T>
class DeviceBuffer
{
public:
    DeviceBuffer() = default;
    DeviceBuffer(DeviceBuffer const&) = delete;
    DeviceBuffer& operator=(DeviceBuffer const&) = delete;
    DeviceBuffer(DeviceBuffer&& other) noexcept
        : mPtr(std::exchange(other.mPtr, nullptr))
    {
    }
    DeviceBuffer& operator=(DeviceBuffer&& other) noexcept
    {
        if (this != &other)
        {
            reset();
            mPtr = std::exchange(other.mPtr, nullptr);
        }
        return *this;
    }
    ~DeviceBuffer()
    {
        reset();
    }

    //! Allocate and copy `host` (synchronous; call outside enqueue). Returns the CUDA status.
    cudaError_t upload(std::vector<T> const& host) noexcept
    {
        reset();
        void* p = nullptr;
        cudaError_t status = cudaMalloc(&p, host.size() * sizeof(T));
        if (status != cudaSuccess)
        {
            return status;
        }
        mPtr = static_cast<T*>(p);
        return cudaMemcpy(mPtr, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice);
    }

    T const* get() const noexcept
    {
        return mPtr;
    }

    void reset() noexcept
    {
        if (mPtr != nullptr)
        {
            static_cast<void>(cudaFree(mPtr));
            mPtr = nullptr;
        }
    }

private:
    T* mPtr{nullptr};
};
} // namespace mvt

#pragma once
// Typed device atomics and fences, one line per runtime. Emulated, a kernel's threads never run at
// the same time: gpu::launch runs them one after another and gpu::launch_with_barriers switches
// fibers only at barriers, so a plain read-modify-write is atomic there and a fence has nothing to
// order.
#include <cstdint>

#include "runtime.hpp"

namespace patternkv::PKV_GPU_NS::gpu {

/// *p += v; returns the value before.
__device__ inline int atomic_add(int* p, int v) {
#if defined(PKV_GPU_EMULATION)
    const int before = *p;
    *p = before + v;
    return before;
#else
    return atomicAdd(p, v);
#endif
}

/// *p = min(*p, v).
__device__ inline void atomic_min(unsigned long long* p, unsigned long long v) {
#if defined(PKV_GPU_EMULATION)
    *p = v < *p ? v : *p;
#else
    atomicMin(p, v);
#endif
}

/// *p = max(*p, v).
__device__ inline void atomic_max(std::uint32_t* p, std::uint32_t v) {
#if defined(PKV_GPU_EMULATION)
    *p = v > *p ? v : *p;
#else
    atomicMax(p, v);
#endif
}

/// *p |= v.
__device__ inline void atomic_or(std::uint32_t* p, std::uint32_t v) {
#if defined(PKV_GPU_EMULATION)
    *p |= v;
#else
    atomicOr(p, v);
#endif
}

/// The calling thread's earlier writes become visible to the whole device before its later ones.
__device__ inline void thread_fence() {
#if !defined(PKV_GPU_EMULATION)
    __threadfence();
#endif
}

}  // namespace patternkv::PKV_GPU_NS::gpu

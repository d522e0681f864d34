#pragma once
// Typed device atomics, one line per runtime. Emulated, a kernel's threads never run at the same
// time: gpu::launch runs them one after another and gpu::launch_with_barriers switches fibers only
// at barriers, so a plain read-modify-write is atomic there.
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

/// *p = max(*p, v).
__device__ inline void atomic_max(std::uint32_t* p, std::uint32_t v) {
#if defined(PKV_GPU_EMULATION)
    *p = v > *p ? v : *p;
#else
    atomicMax(p, v);
#endif
}

}  // namespace patternkv::PKV_GPU_NS::gpu

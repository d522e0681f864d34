#pragma once
// Copies of global memory into shared memory that a block issues and waits for later, so that a
// page's codes stream in while the previous page is computed: cp.async (sm_80+) on CUDA, 16-byte
// loads and stores on HIP. Emulated, a copy lands only when its thread waits, so a kernel that reads
// staged data before wait_staged() and a barrier reads stale bytes and differs from the CPU.
#include <cstdint>
#include <cstring>

#include "runtime.hpp"

#if defined(__CUDACC__) && !defined(PKV_GPU_EMULATION)
#include <cuda_pipeline.h>
#endif

namespace patternkv::PKV_GPU_NS::gpu {

/// One copy of `bytes` (4 or 16, both addresses aligned to it) from global src to shared dst.
__device__ inline void copy_async(void* dst, const void* src, int bytes) {
#if defined(PKV_GPU_EMULATION)
    pkv_emulated_block& block = *pkv_emulated_block::running_block;
    block.pending[threadIdx.x].push_back({dst, src, static_cast<std::size_t>(bytes)});
#elif defined(__CUDACC__)
    __pipeline_memcpy_async(dst, src, static_cast<std::size_t>(bytes));
#else
    if (bytes == 16)
        *static_cast<uint4*>(dst) = *static_cast<const uint4*>(src);
    else
        *static_cast<std::uint32_t*>(dst) = *static_cast<const std::uint32_t*>(src);
#endif
}

/// The block's threads (tid of `threads`) issue the copy of `words` 32-bit words from global src to
/// shared dst (16-byte aligned): 16 bytes a copy when src is 16-byte aligned and words a multiple of
/// 4, else 4. Read dst only after wait_staged() and a barrier.
__device__ inline void stage_async(std::uint32_t* dst, const std::uint32_t* src, int words, int tid, int threads) {
    const bool wide = words % 4 == 0 && reinterpret_cast<std::uintptr_t>(src) % 16 == 0;
    const int step = wide ? 4 : 1;
    for (int w = tid * step; w < words; w += threads * step) copy_async(dst + w, src + w, 4 * step);
#if defined(__CUDACC__) && !defined(PKV_GPU_EMULATION)
    __pipeline_commit();
#endif
}

/// Waits until every copy the calling thread issued has landed (other threads' copies: a barrier after).
__device__ inline void wait_staged() {
#if defined(PKV_GPU_EMULATION)
    pkv_emulated_block& block = *pkv_emulated_block::running_block;
    for (const auto& c : block.pending[threadIdx.x]) std::memcpy(c.dst, c.src, c.bytes);
    block.pending[threadIdx.x].clear();
#elif defined(__CUDACC__)
    __pipeline_wait_prior(0);
#endif
}

}  // namespace patternkv::PKV_GPU_NS::gpu

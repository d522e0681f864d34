#pragma once
// Copies of global memory into shared memory that a block issues and waits for later, so that the
// next pages' codes stream in while a page is computed: cp.async (sm_80+) on CUDA, in groups (one
// per stage_async) that land in the order they were issued; 16-byte loads and stores on HIP.
// Emulated, a group lands either when it is issued or when its thread waits for it (at random), so
// a kernel that reads staged data before the wait that covers it and a barrier, or that issues a
// copy into a buffer another thread still reads, gets other bits than the CPU.
#include <cstdint>
#include <cstring>

#include "runtime.hpp"

#if defined(__CUDACC__) && !defined(PKV_GPU_EMULATION)
#include <cuda_pipeline.h>
#endif

namespace patternkv::PKV_GPU_NS::gpu {

/// The most groups a thread may leave in flight when it waits (wait_staged).
inline constexpr int max_staged_in_flight = 2;

/// One copy of `bytes` (4 or 16, both addresses aligned to it) from global src to shared dst, in
/// the calling thread's open group.
__device__ inline void copy_async(void* dst, const void* src, int bytes) {
#if defined(PKV_GPU_EMULATION)
    pkv_emulated_block::running_block->issue_copy(threadIdx.x, {dst, src, static_cast<std::size_t>(bytes)});
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
/// shared dst (16-byte aligned), as one group per thread (also with no words: every call commits a
/// group, so a thread counts its groups the same as every other): 16 bytes a copy when src is
/// 16-byte aligned and words a multiple of 4, else 4. Read dst only after the wait_staged() that
/// covers this group and a barrier.
__device__ inline void stage_async(std::uint32_t* dst, const std::uint32_t* src, int words, int tid, int threads) {
    const bool wide = words % 4 == 0 && reinterpret_cast<std::uintptr_t>(src) % 16 == 0;
    const int step = wide ? 4 : 1;
    for (int w = tid * step; w < words; w += threads * step) copy_async(dst + w, src + w, 4 * step);
#if defined(PKV_GPU_EMULATION)
    pkv_emulated_block::running_block->commit_copies(threadIdx.x);
#elif defined(__CUDACC__)
    __pipeline_commit();
#endif
}

/// Waits until the calling thread has at most `in_flight` (0 .. max_staged_in_flight) of its
/// groups not landed: all but its newest `in_flight` (other threads' copies: a barrier after).
__device__ inline void wait_staged(int in_flight) {
#if defined(PKV_GPU_EMULATION)
    pkv_emulated_block::running_block->wait_copies(threadIdx.x, static_cast<std::size_t>(in_flight));
#elif defined(__CUDACC__)
    // cp.async.wait_group takes its count as an immediate.
    if (in_flight >= 2)
        __pipeline_wait_prior(2);
    else if (in_flight == 1)
        __pipeline_wait_prior(1);
    else
        __pipeline_wait_prior(0);
#else
    (void)in_flight;
#endif
}

}  // namespace patternkv::PKV_GPU_NS::gpu

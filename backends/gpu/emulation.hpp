#pragma once
// A host emulation of the few CUDA/HIP device-language features backends/gpu/ uses, so the GPU
// kernels and backend class can be compiled by g++ and run on the CPU (tests/test_differential.cpp,
// --backend emulated). It checks the thread mapping and index maps of every kernel against the CPU
// reference on machines without a GPU; it does not check device compilers' arithmetic (fma, IEEE
// division and sqrt, denormals), which only a device run does.
//
// Blocks run one after another, in an order that varies from launch to launch
// (gpu::emulated_order). A kernel launched with gpu::launch runs its threads one after another too,
// in a varying order (it must not use __syncthreads); gpu::launch_with_barriers runs each block's
// threads as std::threads, started in a varying order, meeting at a std::barrier. __shared__
// becomes static storage, which is per block because blocks never overlap. Launches past the
// device limits throw, as a device refuses them.
#include <barrier>
#include <cstdlib>

#define __global__
#define __device__
#define __host__
#define __shared__ static
#define __launch_bounds__(n)

struct pkv_emulated_dim3 {
    unsigned x = 0, y = 0, z = 0;
};
inline thread_local pkv_emulated_dim3 threadIdx, blockIdx, blockDim;
inline thread_local std::barrier<>* pkv_emulated_block_barrier = nullptr;

inline void __syncthreads() {
    if (pkv_emulated_block_barrier == nullptr) std::abort();  // a barrier in a kernel launched with gpu::launch
    pkv_emulated_block_barrier->arrive_and_wait();
}

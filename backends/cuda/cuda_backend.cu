// The CUDA backend: the shared GPU backend (backends/gpu/) compiled by nvcc into patternkv::cuda.
#include "backends/gpu/backend.hpp"

namespace patternkv {

// The probe kernel shows whether this binary has code for the device (not only whether one exists).
std::string cuda_unavailable_reason() {
    return cuda::gpu::unavailable_reason(reinterpret_cast<const void*>(&cuda::halves_to_floats_kernel));
}

std::unique_ptr<cache_backend> make_cuda_backend(const layer_cache_state& s) { return cuda::make_gpu_backend(s, backend::cuda); }

}  // namespace patternkv

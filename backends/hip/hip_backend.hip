// The HIP backend: the shared GPU backend (backends/gpu/) compiled by hipcc into patternkv::hip.
#include "backends/gpu/backend.hpp"

namespace patternkv {

// The probe kernel shows whether this binary has code for the device (not only whether one exists).
std::string hip_unavailable_reason() { return hip::gpu::unavailable_reason(reinterpret_cast<const void*>(&hip::halves_to_floats_kernel)); }

std::unique_ptr<cache_backend> make_hip_backend(const layer_cache_state& s) { return hip::make_gpu_backend(s, backend::hip); }

}  // namespace patternkv

// The HIP backend: the shared GPU backend (backends/gpu/) compiled by hipcc into patternkv::hip.
#include "backends/gpu/backend.hpp"

namespace patternkv {

std::string hip_unavailable_reason() { return hip::gpu::unavailable_reason(); }

std::unique_ptr<cache_backend> make_hip_backend(const layer_cache_state& s) { return hip::make_gpu_backend(s, backend::hip); }

}  // namespace patternkv

// Which backends this build has, whether they can run here, and their construction.
#include <fmt/format.h>

#include <patternkv/error.hpp>

#include "cache_backend.hpp"
#include "layer_cache_state.hpp"

namespace patternkv {

#if PATTERNKV_WITH_CUDA
std::string cuda_unavailable_reason();
std::unique_ptr<cache_backend> make_cuda_backend(const layer_cache_state& s);
#endif
#if PATTERNKV_WITH_HIP
std::string hip_unavailable_reason();
std::unique_ptr<cache_backend> make_hip_backend(const layer_cache_state& s);
#endif

const char* backend_name(backend b) {
    switch (b) {
        case backend::cpu:
            return "cpu";
        case backend::cuda:
            return "cuda";
        case backend::hip:
            return "hip";
    }
    return "?";
}

std::string backend_unavailable_reason(backend b) {
    switch (b) {
        case backend::cpu:
            return {};
        case backend::cuda:
#if PATTERNKV_WITH_CUDA
            return cuda_unavailable_reason();
#else
            return "this build of libpatternkv has no CUDA backend (configure with -Dcuda=enabled)";
#endif
        case backend::hip:
#if PATTERNKV_WITH_HIP
            return hip_unavailable_reason();
#else
            return "this build of libpatternkv has no HIP backend (configure with -Dhip=enabled)";
#endif
    }
    return fmt::format("unknown backend code {}", static_cast<int>(b));
}

std::unique_ptr<cache_backend> make_backend(backend kind, [[maybe_unused]] const layer_cache_state& s) {
    if (const std::string why = backend_unavailable_reason(kind); !why.empty())
        throw error(fmt::format("layer_cache: backend {} unavailable: {}", backend_name(kind), why));
    switch (kind) {
#if PATTERNKV_WITH_CUDA
        case backend::cuda:
            return make_cuda_backend(s);
#endif
#if PATTERNKV_WITH_HIP
        case backend::hip:
            return make_hip_backend(s);
#endif
        default:
            return make_cpu_backend();
    }
}

// The host-only backend (the CPU reference) takes no device views and no stream; layer_cache
// refuses both before they reach it, so these name the bug if one ever does.
namespace {
[[noreturn]] void refuse_device_call(const cache_backend& b, const char* what) {
    throw error(fmt::format("{}: the {} backend takes no device views", what, backend_name(b.kind())));
}
}  // namespace

void cache_backend::prefill_device(layer_cache_state&, int, const const_tensor_view&, const const_tensor_view&, int) {
    refuse_device_call(*this, "prefill");
}
void cache_backend::append_device(layer_cache_state&, std::span<const int>, const const_tensor_view&, const const_tensor_view&) {
    refuse_device_call(*this, "append");
}
void cache_backend::attend_device(const layer_cache_state&, std::span<const int>, const const_tensor_view&, const tensor_view&) const {
    refuse_device_call(*this, "attend");
}
void cache_backend::set_stream(void* stream) {
    if (stream != nullptr)
        throw error(fmt::format("set_stream: the {} backend runs on the host and takes no stream (only nullptr)", backend_name(kind())));
}

}  // namespace patternkv

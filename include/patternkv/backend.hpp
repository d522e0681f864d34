#pragma once
/// @file backend.hpp
/// Where a cache's data lives and its kernels run, chosen at run time.

#include <string>
#include "export.hpp"

namespace patternkv {

/// Compute backend of a layer_cache. Every backend produces bit-identical results.
enum class backend {
    cpu,   ///< the oneTBB CPU reference (always available)
    cuda,  ///< NVIDIA GPUs (built with -Dcuda=enabled)
    hip,   ///< AMD GPUs (built with -Dhip=enabled)
};

/// "cpu", "cuda" or "hip".
PATTERNKV_API const char* backend_name(backend b);

/// Empty when `b` can be used in this process; otherwise why not (not compiled in, no device, ...).
PATTERNKV_API std::string backend_unavailable_reason(backend b);

/// backend_unavailable_reason(b).empty().
inline bool backend_available(backend b) { return backend_unavailable_reason(b).empty(); }

}  // namespace patternkv

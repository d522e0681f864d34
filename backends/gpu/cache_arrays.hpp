#pragma once
// Device-side view of a layer cache: the same arrays as layer_cache_state in the same layout
// (core/cache_layout.hpp, the one index map of host, device and files), so a byte-for-byte copy in
// either direction is the whole synchronisation.
#include <cstdint>

#include "core/cache_layout.hpp"
#include "core/page_layout.hpp"
#include "core/platform.hpp"
#include "runtime.hpp"

namespace patternkv::PKV_GPU_NS {

struct cache_arrays : core::cache_layout, core::cache_pointers {
    PKV_HD core::page_ref page(int seq, int h, int p) const { return core::cache_layout::page(*this, seq, h, p); }
    PKV_HD core::head_pages head(int seq, int h) const { return core::cache_layout::head(*this, seq, h); }
    /// fp16 bank of K (v = false) or V [bank_capacity][d].
    PKV_HD std::uint16_t* bank(bool v, int seq, int h) const { return core::cache_layout::bank(*this, v, seq, h); }
    /// fp16 rows of K or V, sink then window [S + R][d].
    PKV_HD std::uint16_t* window(bool v, int seq, int h) const { return core::cache_layout::window(*this, v, seq, h); }
};

/// Host-owned counters, uploaded before every operation (layer_cache keeps the authoritative copy:
/// reset() and the sequence counters never go through the backend). Bank sizes are indexed by sh.
struct cache_counters {
    const int* pages;
    const int* window_count;
    const int* k_bank_size;
    const int* v_bank_size;

    PKV_HD int bank_size(bool v, std::int64_t sh) const { return (v ? v_bank_size : k_bank_size)[sh]; }
};

}  // namespace patternkv::PKV_GPU_NS

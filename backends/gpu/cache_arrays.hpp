#pragma once
// Device-side view of a layer cache: the same arrays as layer_cache_state (page_layout.hpp), in the
// same layout, so a byte-for-byte copy in either direction is the whole synchronisation. The index
// maps below are layer_cache_state::head / page_mut / bank / window written for device code.
#include <cstdint>

#include "core/page_layout.hpp"
#include "core/platform.hpp"
#include "runtime.hpp"

namespace patternkv::PKV_GPU_NS {

struct cache_arrays {
    core::page_geometry g;
    int heads;          ///< KV heads H
    int max_pages;      ///< pages reserved per (sequence, head)
    int bank_capacity;  ///< patterns reserved per bank (0 without patterns)

    std::uint32_t* k_codes;
    std::uint32_t* v_codes;
    std::uint32_t* v_gate;
    core::scale_min* k_sm;
    core::scale_min* v_sm;
    std::uint8_t* k_index;
    std::uint8_t* v_index;
    std::uint16_t* k_bank;
    std::uint16_t* v_bank;
    std::uint16_t* window_k;
    std::uint16_t* window_v;

    PKV_HD std::int64_t sh(int seq, int h) const { return static_cast<std::int64_t>(seq) * heads + h; }

    PKV_HD core::page_ref page(int seq, int h, int page) const {
        const std::int64_t p = sh(seq, h) * max_pages + page;
        return {k_codes + p * g.k_code_words(), k_sm + p * g.k_groups(), k_index + p * g.k_index_bytes(),
                v_codes + p * g.v_code_words(), v_sm + p * g.v_groups(), v_index + p * g.v_index_bytes(),
                v_gate + p * g.gate_words()};
    }
    PKV_HD core::head_pages head(int seq, int h) const {
        const core::page_ref p = page(seq, h, 0);
        return {g, p.k_codes, p.k_sm, p.k_index, p.v_codes, p.v_sm, p.v_index, p.v_gate};
    }
    /// fp16 bank of K (v = false) or V [bank_capacity][d].
    PKV_HD std::uint16_t* bank(bool v, int seq, int h) const { return (v ? v_bank : k_bank) + sh(seq, h) * bank_capacity * g.d; }
    /// fp16 rows of K or V, sink then window [S + R][d].
    PKV_HD std::uint16_t* window(bool v, int seq, int h) const { return (v ? window_v : window_k) + sh(seq, h) * g.window_rows() * g.d; }
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

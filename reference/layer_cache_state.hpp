#pragma once
// Internal state of layer_cache (CPU reference backend). Arrays are indexed by sh = seq * H + head
// and preallocated for max_tokens per sequence at construction.
#include <cstdint>
#include <memory>
#include <variant>
#include <vector>

#include <tbb/enumerable_thread_specific.h>

#include <patternkv/config.hpp>
#include <patternkv/layer_cache.hpp>
#include <patternkv/policies.hpp>

#include "cache_backend.hpp"
#include "core/page_layout.hpp"

namespace patternkv {

/// The page layout a config implies (host, device and file use this one definition).
core::page_geometry geometry_of(const config& c);

struct layer_cache_state {
    config cfg;
    int batch = 0;
    std::int64_t max_tokens = 0;
    int max_pages = 0;      ///< pages reserved per sequence
    int bank_capacity = 0;  ///< patterns reserved per bank (0 without patterns)
    core::page_geometry geom{};

    std::variant<kmeans_miner, no_pattern_miner> miner;
    std::variant<z_test_gate, always_gate, never_gate> gate{always_gate{}};
    std::variant<channel_quantizer, token_quantizer> k_quantizer;
    token_quantizer v_quantizer{};

    // quantized history, [sh][page][...] (page_layout.hpp)
    std::vector<std::uint32_t> k_codes, v_codes, v_gate;
    std::vector<core::scale_min> k_sm, v_sm;
    std::vector<std::uint8_t> k_index, v_index;
    // pattern banks, fp16 bits [sh][bank_capacity][d], and their sizes [sh]
    std::vector<std::uint16_t> k_bank, v_bank;
    std::vector<int> k_bank_size, v_bank_size;
    // full-precision window, fp16 bits [sh][R][d]
    std::vector<std::uint16_t> window_k, window_v;
    // per sequence
    std::vector<int> pages;         ///< quantized pages
    std::vector<int> window_count;  ///< tokens in the window
    std::vector<int> all_seqs;      ///< 0 .. batch - 1

    // scratch (reused; grows only on first use)
    std::vector<std::uint16_t> in_k, in_v;  ///< converted append/prefill inputs
    mutable std::vector<float> q_in;        ///< converted queries [n][Hq][d]
    mutable std::vector<float> q_tau;       ///< scaled queries [n][Hq][d]
    mutable std::vector<float> qm;          ///< q . K patterns [n][Hq][bank_capacity]
    mutable std::vector<float> partials;    ///< split records [n][Hq][max_splits][stride]
    mutable std::vector<float> out;         ///< attention output [n][Hq][d] before the copy into the user's view
    mutable tbb::enumerable_thread_specific<std::vector<float>> thread_scratch;

    std::unique_ptr<cache_backend> impl;  ///< where the data lives and the kernels run

    int heads() const { return cfg.num_kv_heads; }
    int d() const { return cfg.head_dim; }
    int gqa() const { return cfg.num_q_heads / cfg.num_kv_heads; }
    bool has_patterns() const { return bank_capacity > 0; }
    /// Whether the K (v = false) or V (v = true) side aligns to patterns.
    bool side_has_patterns(bool v) const { return has_patterns() && (v || geom.k_patterns); }
    int max_splits() const {  // in 64 bits: max_pages + pps - 1 may pass INT_MAX
        const std::int64_t pps = core::pages_per_split(geom.tokens);
        return static_cast<int>((max_pages + pps - 1) / pps + 1);
    }
    std::size_t sh(int seq, int h) const { return static_cast<std::size_t>(seq) * heads() + h; }
    std::int64_t tokens(int seq) const {
        return static_cast<std::int64_t>(pages[seq]) * geom.tokens + window_count[seq];
    }

    core::head_pages head(int seq, int h) const;
    core::page_ref page_mut(int seq, int h, int page);
    std::uint16_t* bank(bool v, int seq, int h) {
        return (v ? v_bank : k_bank).data() + sh(seq, h) * bank_capacity * d();
    }
    const std::uint16_t* bank(bool v, int seq, int h) const {
        return (v ? v_bank : k_bank).data() + sh(seq, h) * bank_capacity * d();
    }
    std::uint16_t* window(bool v, int seq, int h) {
        return (v ? window_v : window_k).data() + sh(seq, h) * geom.tokens * d();
    }
    const std::uint16_t* window(bool v, int seq, int h) const {
        return (v ? window_v : window_k).data() + sh(seq, h) * geom.tokens * d();
    }
    std::vector<float>& scratch(std::size_t n) const {
        auto& s = thread_scratch.local();
        if (s.size() < n) s.resize(n);
        return s;
    }
};

} // namespace patternkv

#pragma once
// Where every array of a layer cache lives: one definition for the host state (src/), the device
// arrays (backends/gpu/) and the reservations the constructor and the file reader check. Arrays
// are indexed by sh = seq * heads + head; pages by sh * max_pages + page (page_layout.hpp inside).

#include <cstdint>

#include "attention.hpp"
#include "page_layout.hpp"
#include "platform.hpp"

namespace patternkv::core {

/// The arrays of a layer cache: host vectors' storage or device allocations.
struct cache_pointers {
    std::uint32_t* k_codes;
    std::uint32_t* v_codes;
    std::uint32_t* v_gate;
    scale_min* k_sm;
    scale_min* v_sm;
    std::uint8_t* k_index;
    std::uint8_t* v_index;
    std::uint16_t* k_bank;    ///< fp16 [sh][bank_capacity][d]
    std::uint16_t* v_bank;    ///< fp16 [sh][bank_capacity][d]
    std::uint16_t* window_k;  ///< fp16 [sh][S + R][d]: sink rows, then the window
    std::uint16_t* window_v;  ///< fp16 [sh][S + R][d]
};

/// Element counts of every array of a cache of `batch` sequences (cache_layout::sizes).
struct cache_sizes {
    std::int64_t k_codes, v_codes, v_gate, k_sm, v_sm, k_index, v_index;  ///< per K/V array
    std::int64_t bank;                                                    ///< each of k_bank, v_bank
    std::int64_t window;                                                  ///< each of window_k, window_v
    std::int64_t heads;                                                   ///< (sequence, KV head) pairs: bank sizes
};

/// The shape of a layer cache's storage.
struct cache_layout {
    page_geometry g;
    int heads;          ///< KV heads H
    int max_pages;      ///< pages reserved per (sequence, head)
    int bank_capacity;  ///< patterns reserved per bank (0 without patterns)

    PKV_HD std::int64_t sh(int seq, int h) const { return static_cast<std::int64_t>(seq) * heads + h; }

    /// Page `page` of (seq, h).
    PKV_HD page_ref page(const cache_pointers& a, int seq, int h, int page) const {
        const std::int64_t p = sh(seq, h) * max_pages + page;
        return {a.k_codes + p * g.k_code_words(), a.k_sm + p * g.k_groups(), a.k_index + p * g.k_index_bytes(),
                a.v_codes + p * g.v_code_words(), a.v_sm + p * g.v_groups(), a.v_index + p * g.v_index_bytes(),
                a.v_gate + p * g.gate_words()};
    }
    /// Every page of (seq, h), read-only.
    PKV_HD head_pages head(const cache_pointers& a, int seq, int h) const {
        const page_ref p = page(a, seq, h, 0);
        return {g, p.k_codes, p.k_sm, p.k_index, p.v_codes, p.v_sm, p.v_index, p.v_gate};
    }
    /// fp16 bank of K (v = false) or V of (seq, h): [bank_capacity][d].
    PKV_HD std::uint16_t* bank(const cache_pointers& a, bool v, int seq, int h) const {
        return (v ? a.v_bank : a.k_bank) + sh(seq, h) * bank_capacity * g.d;
    }
    /// fp16 rows of K or V of (seq, h), sink then window: [S + R][d].
    PKV_HD std::uint16_t* window(const cache_pointers& a, bool v, int seq, int h) const {
        return (v ? a.window_v : a.window_k) + sh(seq, h) * g.window_rows() * g.d;
    }
    /// Attention splits a sequence may need: its history splits at max_pages, and the window's.
    PKV_HD int max_splits() const {  // in 64 bits: max_pages + pps - 1 may pass INT_MAX
        const std::int64_t pps = pages_per_split(g.tokens);
        return static_cast<int>((max_pages + pps - 1) / pps + 1);
    }

    /// Element counts of every array for `batch` sequences.
    cache_sizes sizes(int batch) const {
        const std::int64_t hs = static_cast<std::int64_t>(batch) * heads, pages = hs * max_pages;
        return {pages * g.k_code_words(),   pages * g.v_code_words(),
                pages * g.gate_words(),     pages * g.k_groups(),
                pages * g.v_groups(),       pages * g.k_index_bytes(),
                pages * g.v_index_bytes(),  hs * bank_capacity * g.d,
                hs * g.window_rows() * g.d, hs};
    }
    /// Bytes the host state of `batch` sequences with `q_heads` query heads reserves: the arrays,
    /// the bank sizes and sequence counters, and the per-query attention buffers (the threads'
    /// scratch aside). In long double, exact to 2^64, so a caller can refuse shapes that overflow.
    long double reserved_bytes(int batch, int q_heads) const {
        const long double hs = static_cast<long double>(batch) * heads, d = g.d;
        const long double per_head = static_cast<long double>(max_pages) * static_cast<long double>(g.page_bytes()) +
                                     4.0L * (bank_capacity + g.window_rows()) * d + 8.0L;  // K and V fp16 rows, two sizes
        const long double per_query =
            4.0L * (3.0L * d + bank_capacity + static_cast<long double>(max_splits()) * partial_stride(g.d, bank_capacity));
        return hs * per_head + 8.0L * batch + static_cast<long double>(batch) * q_heads * per_query;
    }
};

}  // namespace patternkv::core

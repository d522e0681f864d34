#pragma once
// Where every array of a layer cache lives: one definition for the host state (src/), the device
// arrays (backends/gpu/) and the reservations the constructor and the file reader check.
//
// History pages live in one pool shared by every sequence: pool slot p holds one page of every KV
// head (entry head * pool_pages + p of each page array, page_layout.hpp inside). A sequence reaches its
// pages through its block table row, [seq][max_pages] pool slots in token order, so its memory
// follows its length, not max_tokens. The per-sequence arrays (banks, sink and window rows, bank
// sizes) are indexed by sh = seq * heads + head.

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
    std::uint16_t* k_bank;      ///< fp16 [sh][bank_capacity][d]
    std::uint16_t* v_bank;      ///< fp16 [sh][bank_capacity][d]
    std::uint16_t* window_k;    ///< fp16 [sh][S + R][d]: sink rows, then the window
    std::uint16_t* window_v;    ///< fp16 [sh][S + R][d]
    std::int32_t* block_table;  ///< [seq][max_pages]: pool slot of each page of the sequence
};

/// Element counts of every array of a cache of `batch` sequences (cache_layout::sizes).
struct cache_sizes {
    std::int64_t k_codes, v_codes, v_gate, k_sm, v_sm, k_index, v_index;  ///< per K/V array
    std::int64_t bank;                                                    ///< each of k_bank, v_bank
    std::int64_t window;                                                  ///< each of window_k, window_v
    std::int64_t heads;                                                   ///< (sequence, KV head) pairs: bank sizes
    std::int64_t block_table;                                             ///< block table entries
};

/// The shape of a layer cache's storage.
struct cache_layout {
    page_geometry g;
    int heads;                ///< KV heads H
    int max_pages;            ///< pages a sequence may hold (its block table row)
    std::int32_t pool_pages;  ///< pages in the shared pool
    int bank_capacity;        ///< patterns reserved per bank (0 without patterns)

    PKV_HD std::int64_t sh(int seq, int h) const { return static_cast<std::int64_t>(seq) * heads + h; }

    /// Block table entry of page `page` of sequence `seq`.
    PKV_HD std::int64_t block_entry(int seq, int page) const { return static_cast<std::int64_t>(seq) * max_pages + page; }
    /// Page `page` of (seq, h), through the sequence's block table.
    PKV_HD page_ref page(const cache_pointers& a, int seq, int h, int page) const {
        return page_at<page_ref>(g, a, page_entry(a.block_table[block_entry(seq, page)], pool_pages, h));
    }
    /// Every page of (seq, h), read-only.
    PKV_HD head_pages head(const cache_pointers& a, int seq, int h) const {
        return {g,          a.k_codes, a.k_sm, a.k_index, a.v_codes, a.v_sm, a.v_index, a.v_gate, a.block_table + block_entry(seq, 0),
                pool_pages, h};
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
        const std::int64_t hs = static_cast<std::int64_t>(batch) * heads, pages = static_cast<std::int64_t>(pool_pages) * heads;
        return {pages * g.k_code_words(),
                pages * g.v_code_words(),
                pages * g.gate_words(),
                pages * g.k_groups(),
                pages * g.v_groups(),
                pages * g.k_index_bytes(),
                pages * g.v_index_bytes(),
                hs * bank_capacity * g.d,
                hs * g.window_rows() * g.d,
                hs,
                static_cast<std::int64_t>(batch) * max_pages};
    }
    /// Bytes the host state of `batch` sequences with `q_heads` query heads reserves: the pool, the
    /// per-sequence rows, bank sizes, counters and block tables, the pool's free list, and the
    /// per-query attention buffers (the threads' scratch aside). In long double, exact to 2^64, so a
    /// caller can refuse shapes that overflow.
    long double reserved_bytes(int batch, int q_heads) const {
        const long double hs = static_cast<long double>(batch) * heads, d = g.d;
        const long double pool = static_cast<long double>(pool_pages) * (heads * static_cast<long double>(g.page_bytes()) + 4.0L);
        const long double per_head = 4.0L * (bank_capacity + g.window_rows()) * d + 8.0L;  // K and V fp16 rows, two sizes
        const long double per_seq = 8.0L + 4.0L * max_pages;                               // counters, block table row
        const long double per_query =
            4.0L * (3.0L * d + bank_capacity + static_cast<long double>(max_splits()) * partial_stride(g.d, bank_capacity));
        return pool + hs * per_head + per_seq * batch + static_cast<long double>(batch) * q_heads * per_query;
    }
};

}  // namespace patternkv::core

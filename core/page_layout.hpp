#pragma once
// The storage definition of one history page: residual_length tokens of one (sequence, KV head),
// quantized at one flush. Every backend and the file format use these sizes; nothing redefines them.
//
// Per page, in separate arrays of the (sequence, head):
//   K codes  per-channel: [d][words_for_codes(R, kb)]  (codes packed along tokens)
//            per-token:   [R][words_for_codes(d, kb)]  (codes packed along channels)
//   K scale/min per-channel: [R / k_group][d];  per-token: [R][d / k_token_group]
//   V codes  [R][words_for_codes(d, vb)];  V scale/min [R][d / v_group]
//   V pattern index: [R] bytes; V gate bits: [ceil(R / 32)] words (only with patterns)
//   K pattern index: [R] bytes (only with patterns and config::k_patterns)

#include <cstdint>

#include "packing.hpp"
#include "platform.hpp"
#include "quantize.hpp"

namespace patternkv::core {

struct page_geometry {
    int d;       ///< head_dim
    int tokens;  ///< R, tokens per page
    int k_bits, v_bits;
    bool k_per_channel;
    int k_group;         ///< per-channel: tokens per group; per-token: channels per group
    int v_group;         ///< channels per V group
    bool patterns;       ///< V pattern indices and gate bits are stored
    bool k_patterns;     ///< K is aligned to patterns too: K pattern indices are stored (config::k_patterns)
    int index_bits = 8;  ///< bits per pattern index: index_bits_for(bank capacity), 2, 4 or 8
    int sink = 0;        ///< S: a sequence's first S tokens stay in fp16 for good (config::sink_tokens)

    // The fp16 rows of a (sequence, head) are one buffer of window_rows(): the sink rows [0, S),
    // then the window [S, S + R). Its row count (window_count) covers both, so attention reads one
    // contiguous run and a sequence holds pages * R + window_count tokens. The sink fills first;
    // pages begin after it.
    PKV_HD int window_rows() const { return sink + tokens; }
    /// Whether a buffer of `count` rows is full: the next token first flushes rows [S, S + R).
    PKV_HD bool window_full(int count) const { return count == sink + tokens; }
    /// The row a new token is written at when the buffer holds `count` rows (a full buffer is
    /// first flushed, which leaves the sink rows).
    PKV_HD int next_row(int count) const { return window_full(count) ? sink : count; }
    /// Sink rows of a sequence of T tokens (the sink fills first).
    PKV_HD std::int64_t sink_rows(std::int64_t T) const { return T < sink ? T : sink; }
    /// Pages a prompt of T tokens fills (the sink first, then whole pages; the rest stays fp16).
    PKV_HD std::int64_t prompt_pages(std::int64_t T) const { return (T - sink_rows(T)) / tokens; }

    PKV_HD int k_row_words() const { return k_per_channel ? words_for_codes(tokens, k_bits) : words_for_codes(d, k_bits); }
    PKV_HD int k_code_words() const { return (k_per_channel ? d : tokens) * k_row_words(); }
    PKV_HD int k_groups() const { return k_per_channel ? (tokens / k_group) * d : tokens * (d / k_group); }
    PKV_HD int v_row_words() const { return words_for_codes(d, v_bits); }
    PKV_HD int v_code_words() const { return tokens * v_row_words(); }
    PKV_HD int v_groups() const { return tokens * (d / v_group); }
    PKV_HD int index_bytes() const { return (tokens * index_bits + 7) / 8; }
    PKV_HD int v_index_bytes() const { return patterns ? index_bytes() : 0; }
    PKV_HD int k_index_bytes() const { return patterns && k_patterns ? index_bytes() : 0; }
    PKV_HD int gate_words() const { return patterns ? (tokens + 31) / 32 : 0; }
    /// Bytes one page stores (K and V, everything).
    PKV_HD std::uint64_t page_bytes() const {
        return 4ull * (k_code_words() + v_code_words() + gate_words()) +
               sizeof(scale_min) * static_cast<std::uint64_t>(k_groups() + v_groups()) + k_index_bytes() + v_index_bytes();
    }
};

/// Read-only pointers to one page.
struct page_view {
    const std::uint32_t* k_codes;
    const scale_min* k_sm;
    const std::uint8_t* k_index;
    const std::uint32_t* v_codes;
    const scale_min* v_sm;
    const std::uint8_t* v_index;
    const std::uint32_t* v_gate;
};

/// Writable pointers to one page.
struct page_ref {
    std::uint32_t* k_codes;
    scale_min* k_sm;
    std::uint8_t* k_index;
    std::uint32_t* v_codes;
    scale_min* v_sm;
    std::uint8_t* v_index;
    std::uint32_t* v_gate;
};

PKV_HD bool gate_bit(const std::uint32_t* gate, int t) { return (gate[t >> 5] >> (t & 31)) & 1u; }

/// Pattern indices are packed at the fewest of 2, 4 or 8 bits that hold every index of a bank of
/// `capacity` patterns; an index never straddles a byte (index t of a page: byte t * bits / 8, lowest
/// bits first).
PKV_HD constexpr int index_bits_for(int capacity) { return capacity <= 4 ? 2 : capacity <= 16 ? 4 : 8; }

/// Index t of a page's packed indices.
PKV_HD int pattern_index(const std::uint8_t* idx, int t, int bits) {
    const int bit = t * bits;
    return (idx[bit >> 3] >> (bit & 7)) & ((1 << bits) - 1);
}

/// Sets index t (a < 2^bits); the other indices sharing its byte keep their values.
PKV_HD void set_pattern_index(std::uint8_t* idx, int t, int bits, int a) {
    const int bit = t * bits, mask = ((1 << bits) - 1) << (bit & 7);
    idx[bit >> 3] = static_cast<std::uint8_t>((idx[bit >> 3] & ~mask) | ((a << (bit & 7)) & mask));
}

/// Indices first .. first + n - 1 as one byte each: `idx` itself at 8 bits, else unpacked into `buf`.
PKV_HD const std::uint8_t* pattern_indices(const std::uint8_t* idx, int first, int n, int bits, std::uint8_t* buf) {
    if (bits == 8) return idx + first;
    for (int t = 0; t < n; ++t) buf[t] = static_cast<std::uint8_t>(pattern_index(idx, first + t, bits));
    return buf;
}

}  // namespace patternkv::core

namespace patternkv::core {

/// Attention splits over a sequence's `pages` pages: runs of pages_per_split(R) pages, in order.
PKV_HD int history_splits(int pages, int page_tokens) {
    const int pps = pages_per_split(page_tokens);
    return (pages + pps - 1) / pps;
}

/// All attention splits of a sequence: its history splits, then one over its `rows` fp16 rows
/// (sink and window) when it has any.
PKV_HD int attention_splits(int pages, int rows, int page_tokens) { return history_splits(pages, page_tokens) + (rows > 0 ? 1 : 0); }

/// Tokens one attention split reads at most: a split's pages, or the sink and window rows.
PKV_HD int split_tokens(const page_geometry& g) {
    const int history = pages_per_split(g.tokens) * g.tokens;
    return history > g.window_rows() ? history : g.window_rows();
}

/// One page's place in the page arrays: pool slot `slot` holds that page of every KV head, at entry
/// h * pool_pages + slot of each array, so the pages of one head lie together (a sequence whose pages
/// are consecutive slots reads each head's history as one run, as decode's prefetchers like).
PKV_HD std::int64_t page_entry(std::int32_t slot, std::int32_t pool_pages, int h) {
    return static_cast<std::int64_t>(h) * pool_pages + slot;
}

/// Entry `e` of the page arrays of `a` (anything holding the seven array pointers of page_ref), as a
/// page_ref or page_view: the one map from an entry to its pointers.
template <class Page, class Arrays>
PKV_HD Page page_at(const page_geometry& g, const Arrays& a, std::int64_t e) {
    return {a.k_codes + e * g.k_code_words(), a.k_sm + e * g.k_groups(), a.k_index + e * g.k_index_bytes(),
            a.v_codes + e * g.v_code_words(), a.v_sm + e * g.v_groups(), a.v_index + e * g.v_index_bytes(),
            a.v_gate + e * g.gate_words()};
}

/// The pages of one (sequence, KV head): the pool's arrays and the sequence's block table (its
/// pages' pool slots, in token order).
struct head_pages {
    page_geometry g;
    const std::uint32_t* k_codes;
    const scale_min* k_sm;
    const std::uint8_t* k_index;
    const std::uint32_t* v_codes;
    const scale_min* v_sm;
    const std::uint8_t* v_index;
    const std::uint32_t* v_gate;
    const std::int32_t* block;  ///< pool slot of page i
    std::int32_t pool_pages;
    int h;

    PKV_HD page_view page(int i) const { return page_at<page_view>(g, *this, page_entry(block[i], pool_pages, h)); }
};

}  // namespace patternkv::core

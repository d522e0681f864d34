#pragma once
/// @file memory_report.hpp
/// What a cache stores, byte by byte.

#include <cstdint>
#include <string>

namespace patternkv {

/// Bytes a cache holds (summed over sequences and KV heads), split by kind: live data (tokens cached
/// so far), which total_bytes() sums, and what the cache reserved at construction.
struct memory_report {
    std::uint64_t code_bytes = 0;           ///< packed K and V codes
    std::uint64_t scale_min_bytes = 0;      ///< fp16 scale/min pairs of every group
    std::uint64_t pattern_index_bytes = 0;  ///< K and V pattern index per quantized token
    std::uint64_t gate_bytes = 0;           ///< V gate bits (packed, 1 bit per quantized token)
    std::uint64_t bank_bytes = 0;           ///< fp16 pattern banks (K and V)
    std::uint64_t window_bytes = 0;         ///< fp16 full-precision window (K and V)
    std::uint64_t quantized_tokens = 0;     ///< tokens in quantized history, summed over sequences
    std::uint64_t window_tokens = 0;        ///< tokens in windows, summed over sequences
    std::uint64_t elements = 0;             ///< cached scalars: (quantized + window tokens) * kv_heads * head_dim * 2
    std::uint64_t pool_pages = 0;           ///< pages in the shared pool (layer_cache.hpp: cache_capacity)
    std::uint64_t pool_pages_used = 0;      ///< pool pages sequences hold
    std::uint64_t reserved_bytes = 0;       ///< host memory the cache allocated for its data and buffers (capacity)

    /// Every byte above, summed.
    std::uint64_t total_bytes() const {
        return code_bytes + scale_min_bytes + pattern_index_bytes + gate_bytes + bank_bytes + window_bytes;
    }
    /// Stored bits per cached K/V scalar, everything included; 0 for an empty cache.
    double bits_per_element() const {
        return elements == 0 ? 0.0 : 8.0 * static_cast<double>(total_bytes()) / static_cast<double>(elements);
    }
    /// One-line human-readable breakdown.
    std::string describe() const;
};

}  // namespace patternkv

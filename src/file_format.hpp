#pragma once
// The cache file format (docs/file-format.md), defined once: the writer (persistence.cpp), the
// reader and the fuzz target use these structs. All integers are little-endian; floating-point
// config fields are stored as their IEEE bit patterns. Every struct is padding-free (asserted).
//
//   file   := file_header, layer[layer_count]
//   layer  := layer_header, table, payload
//   table  := per sequence {u32 pages, u32 window_count}, then per (sequence, kv head)
//             {u32 k_bank_size, u32 v_bank_size}                       (CRC: layer_header.table_crc)
//   payload:= per (sequence, kv head), in order seq-major:             (CRC: layer_header.payload_crc)
//               k_codes  [pages * k_code_words] u32     k_sm [pages * k_groups] {u16 scale, u16 min}
//               v_codes  [pages * v_code_words] u32     v_sm [pages * v_groups] {u16 scale, u16 min}
//               k_index  [pages * index_bytes * k_patterns] u8     v_index [pages * index_bytes] u8
//                        (index_bytes = ceil(R * index_bits / 8), index_bits = 2, 4 or 8 from max_patterns;
//                         version 3; version 2 stored one byte per index)
//               v_gate   [pages * gate_words]   u32
//               k_bank   [k_bank_size * d] fp16     v_bank [v_bank_size * d] fp16
//               window_k [window_count * d] fp16    window_v [window_count * d] fp16
//                        (the sink rows first, then the window: page_layout.hpp; version 4, which
//                         stores sink_tokens where versions 2-3 stored pattern_window)
#include <bit>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include <patternkv/persistence.hpp>

namespace patternkv::detail {

static_assert(std::endian::native == std::endian::little,
              "the cache file format is little-endian and this version reads/writes it with memcpy");

inline constexpr char file_magic[8] = {'P', 'K', 'V', 'C', 'A', 'C', 'H', 'E'};
inline constexpr char layer_magic[8] = {'P', 'K', 'V', 'L', 'A', 'Y', 'E', 'R'};
/// 2: k_patterns in the layer header (K pattern indices only when it is 1); windows may be full.
/// 4: sink_tokens replaces pattern_window; window rows include the sink rows.
inline constexpr std::uint32_t format_version = cache_file_version;
/// Written as a native u32; reads back as 0x04030201 from a byte-swapped (big-endian) file.
inline constexpr std::uint32_t endian_marker = 0x01020304u;

struct file_header {
    char magic[8];                  ///< "PKVCACHE"
    std::uint32_t version;          ///< format_version
    std::uint32_t endian;           ///< endian_marker
    std::uint32_t header_bytes;     ///< sizeof(file_header)
    std::uint32_t layer_count;      ///< >= 1
    std::uint64_t file_bytes;       ///< size of the whole file
    std::uint32_t library_version;  ///< PATTERNKV_VERSION of the writer (informational)
    std::uint32_t flags;            ///< 0 (reserved)
    std::uint32_t reserved;         ///< 0
    std::uint32_t header_crc;       ///< CRC-32C of the bytes before this field
};
static_assert(sizeof(file_header) == 48 && std::has_unique_object_representations_v<file_header>);
static_assert(offsetof(file_header, version) == 8 && offsetof(file_header, layer_count) == 20 && offsetof(file_header, file_bytes) == 24 &&
              offsetof(file_header, header_crc) == 44);

struct layer_header {
    char magic[8];               ///< "PKVLAYER"
    std::uint32_t header_bytes;  ///< sizeof(layer_header)
    std::uint32_t layer_index;   ///< position in the file, 0-based
    // config (include/patternkv/config.hpp), in declaration order
    std::int32_t head_dim, num_kv_heads, num_q_heads, k_bits, v_bits;
    std::uint32_t k_mode;  ///< k_quant_mode: 0 per_channel, 1 per_token
    std::int32_t k_group, k_token_group, v_group, residual_length;
    std::int32_t num_patterns, sink_tokens, max_patterns;
    std::uint32_t grow_patterns;  ///< 0 or 1
    std::uint32_t gate;           ///< gate_mode: 0 z_test, 1 always, 2 never
    std::uint32_t kmeans_iterations;
    std::uint64_t gate_alpha_bits;  ///< double
    std::uint64_t seed;
    std::uint32_t kmeans_tolerance_bits;  ///< float
    std::uint32_t softmax_scale_bits;     ///< float
    // cache shape
    std::int32_t batch;
    std::uint32_t backend;    ///< where the cache ran when saved (informational)
    std::int64_t max_tokens;  ///< capacity per sequence when saved
    // page geometry derived from the config (cross-checked by the reader)
    std::uint32_t k_code_words, k_groups, v_code_words, v_groups;
    std::uint32_t index_bytes;  ///< V pattern index bytes per page (K: the same when k_patterns, else 0)
    std::uint32_t gate_words;
    std::uint32_t bank_capacity;  ///< max_patterns with patterns, else 0
    std::uint32_t k_patterns;     ///< config::k_patterns, 0 or 1
    // sections
    std::uint64_t table_bytes;  ///< 8 * batch + 8 * batch * num_kv_heads
    std::uint64_t payload_bytes;
    std::uint32_t table_crc, payload_crc;
    std::uint32_t k_channel_select;   ///< config::k_channel_select, 0 or 1
    std::int32_t tokens_per_pattern;  ///< config::tokens_per_pattern (version 5)
    std::uint32_t reserved;           ///< 0
    std::uint32_t header_crc;         ///< CRC-32C of the bytes before this field
};
static_assert(sizeof(layer_header) == 192 && std::has_unique_object_representations_v<layer_header>);
static_assert(offsetof(layer_header, head_dim) == 16 && offsetof(layer_header, gate_alpha_bits) == 80 &&
              offsetof(layer_header, batch) == 104 && offsetof(layer_header, max_tokens) == 112 &&
              offsetof(layer_header, table_bytes) == 152 && offsetof(layer_header, header_crc) == 188);

/// One sequence's counters in the table.
struct seq_entry {
    std::uint32_t pages, window_count;
};
/// One (sequence, kv head)'s bank sizes in the table.
struct bank_entry {
    std::uint32_t k_bank_size, v_bank_size;
};
static_assert(sizeof(seq_entry) == 8 && sizeof(bank_entry) == 8);

}  // namespace patternkv::detail

#include <cstring>
#include <span>

#include "crc32c.hpp"

namespace patternkv::detail {

/// Recomputes every checksum of a (possibly modified) file image that can be located, so tests and
/// fuzzers can reach the checks behind the checksums. Never reads or writes out of bounds.
inline void refresh_checksums(std::span<std::uint8_t> image) {
    const std::uint64_t size = image.size();
    if (size < sizeof(file_header)) return;
    file_header fh;
    std::memcpy(&fh, image.data(), sizeof fh);
    std::uint64_t at = sizeof(file_header);
    for (std::uint32_t i = 0; i < fh.layer_count && size - at >= sizeof(layer_header); ++i) {
        layer_header lh;
        std::memcpy(&lh, image.data() + at, sizeof lh);
        const std::uint64_t table_at = at + sizeof(layer_header);
        bool more = false;
        if (lh.table_bytes <= size - table_at) {
            lh.table_crc = crc32c(image.data() + table_at, lh.table_bytes);
            const std::uint64_t payload_at = table_at + lh.table_bytes;
            if (lh.payload_bytes <= size - payload_at) {
                lh.payload_crc = crc32c(image.data() + payload_at, lh.payload_bytes);
                at = payload_at + lh.payload_bytes;
                more = true;
            }
        }
        const std::uint64_t header_at = table_at - sizeof(layer_header);
        lh.header_crc = crc32c(&lh, offsetof(layer_header, header_crc));
        std::memcpy(image.data() + header_at, &lh, sizeof lh);
        if (!more) break;
    }
    fh.header_crc = crc32c(&fh, offsetof(file_header, header_crc));
    std::memcpy(image.data(), &fh, sizeof fh);
}

}  // namespace patternkv::detail

// Cache files (docs/file-format.md): the writer, and a reader that validates the whole file image
// before it constructs anything. Layout structs live in file_format.hpp.
#include <patternkv/persistence.hpp>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <new>
#include <optional>

#include <fmt/format.h>

#include <patternkv/error.hpp>
#include <patternkv/version.hpp>

#include "core/attention.hpp"
#include "core/cache_layout.hpp"
#include "core/fp16.hpp"
#include "core/page_layout.hpp"
#include "core/platform.hpp"
#include "crc32c.hpp"
#include "file_format.hpp"
#include "layer_cache_state.hpp"

namespace patternkv::detail {

/// The one place that reaches into layer_cache's private state (a friend of layer_cache).
struct cache_io {
    static layer_cache_state& state(const layer_cache& c) { return *c.state_; }
};

}  // namespace patternkv::detail

namespace patternkv {
namespace {

using detail::bank_entry;
using detail::file_header;
using detail::layer_header;
using detail::seq_entry;

// The arrays stored per (sequence, kv head), in file order.
enum class section { k_codes, k_sm, v_codes, v_sm, k_index, v_index, v_gate, k_bank, v_bank, window_k, window_v };
constexpr section all_sections[] = {section::k_codes, section::k_sm,     section::v_codes, section::v_sm,
                                    section::k_index, section::v_index,  section::v_gate,  section::k_bank,
                                    section::v_bank,  section::window_k, section::window_v};

// Live counters of one (sequence, kv head).
struct head_counts {
    std::uint64_t pages, window, k_bank, v_bank;
};

// Elements and element size of section `id` for the given counters.
std::uint64_t section_elements(const core::page_geometry& g, section id, const head_counts& n) {
    const std::uint64_t d = static_cast<std::uint64_t>(g.d);
    switch (id) {
        case section::k_codes:
            return n.pages * g.k_code_words();
        case section::k_sm:
            return n.pages * g.k_groups();
        case section::v_codes:
            return n.pages * g.v_code_words();
        case section::v_sm:
            return n.pages * g.v_groups();
        case section::k_index:
            return n.pages * g.k_index_bytes();
        case section::v_index:
            return n.pages * g.v_index_bytes();
        case section::v_gate:
            return n.pages * g.gate_words();
        case section::k_bank:
            return n.k_bank * d;
        case section::v_bank:
            return n.v_bank * d;
        case section::window_k:
        case section::window_v:
            return n.window * d;
    }
    return 0;
}

std::size_t element_bytes(section id) {
    switch (id) {
        case section::k_codes:
        case section::v_codes:
        case section::v_gate:
            return 4;
        case section::k_sm:
        case section::v_sm:
            return sizeof(core::scale_min);
        case section::k_index:
        case section::v_index:
            return 1;
        default:
            return 2;  // fp16
    }
}

const char* section_name(section id) {
    constexpr const char* names[] = {"K codes",           "K scales/mins",     "V codes",     "V scales/mins",
                                     "K pattern indices", "V pattern indices", "V gate bits", "K pattern bank",
                                     "V pattern bank",    "K window",          "V window"};
    return names[static_cast<int>(id)];
}

// Section `id` (a page section) of one page.
std::uint8_t* page_section(const core::page_ref& p, section id) {
    const auto bytes = [](auto* x) { return reinterpret_cast<std::uint8_t*>(x); };
    switch (id) {
        case section::k_codes:
            return bytes(p.k_codes);
        case section::k_sm:
            return bytes(p.k_sm);
        case section::v_codes:
            return bytes(p.v_codes);
        case section::v_sm:
            return bytes(p.v_sm);
        case section::k_index:
            return bytes(p.k_index);
        case section::v_index:
            return bytes(p.v_index);
        default:
            return bytes(p.v_gate);
    }
}

// Calls f(bytes, length) for each contiguous run of section `id` of (seq, h) inside the cache's host
// arrays, in file order: a page section page by page (the pages lie wherever the pool put them), any
// other section as one run.
template <class F>
void for_each_run(layer_cache_state& s, section id, int seq, int h, F f) {
    const core::page_geometry& g = s.geom;
    const auto rows = [&](std::uint16_t* p, std::uint64_t n) { f(reinterpret_cast<std::uint8_t*>(p), n * g.d * sizeof(std::uint16_t)); };
    switch (id) {
        case section::k_bank:
            return rows(s.bank(false, seq, h), static_cast<std::uint64_t>(s.k_bank_size[s.sh(seq, h)]));
        case section::v_bank:
            return rows(s.bank(true, seq, h), static_cast<std::uint64_t>(s.v_bank_size[s.sh(seq, h)]));
        case section::window_k:
            return rows(s.window(false, seq, h), static_cast<std::uint64_t>(s.window_count[seq]));
        case section::window_v:
            return rows(s.window(true, seq, h), static_cast<std::uint64_t>(s.window_count[seq]));
        default:
            break;
    }
    const head_counts one_page{1, 0, 0, 0};
    const std::uint64_t page_bytes = section_elements(g, id, one_page) * element_bytes(id);
    for (int i = 0; i < s.pages[seq]; ++i) f(page_section(s.page_mut(seq, h, i), id), page_bytes);
}

// ---------------------------------------------------------------------------------------------
// writer

template <class T>
void put(std::vector<std::uint8_t>& out, const T& x) {
    const auto* p = reinterpret_cast<const std::uint8_t*>(&x);
    out.insert(out.end(), p, p + sizeof(T));
}

void write_layer(std::vector<std::uint8_t>& out, const layer_cache& cache, std::uint32_t index) {
    layer_cache_state& s = detail::cache_io::state(cache);
    s.impl->sync_to_host(s);
    const config& c = s.cfg;
    const core::page_geometry& g = s.geom;

    std::vector<std::uint8_t> table;
    for (int seq = 0; seq < s.batch; ++seq)
        put(table, seq_entry{static_cast<std::uint32_t>(s.pages[seq]), static_cast<std::uint32_t>(s.window_count[seq])});
    for (int seq = 0; seq < s.batch; ++seq)
        for (int h = 0; h < s.heads(); ++h)
            put(table, bank_entry{static_cast<std::uint32_t>(s.k_bank_size[s.sh(seq, h)]),
                                  static_cast<std::uint32_t>(s.v_bank_size[s.sh(seq, h)])});

    layer_header lh{};
    std::memcpy(lh.magic, detail::layer_magic, sizeof lh.magic);
    lh.header_bytes = sizeof(layer_header);
    lh.layer_index = index;
    lh.head_dim = c.head_dim;
    lh.num_kv_heads = c.num_kv_heads;
    lh.num_q_heads = c.num_q_heads;
    lh.k_bits = c.k_bits;
    lh.v_bits = c.v_bits;
    lh.k_mode = static_cast<std::uint32_t>(c.k_mode);
    lh.k_group = c.k_group;
    lh.k_token_group = c.k_token_group;
    lh.v_group = c.v_group;
    lh.residual_length = c.residual_length;
    lh.num_patterns = c.num_patterns;
    lh.sink_tokens = c.sink_tokens;
    lh.max_patterns = c.max_patterns;
    lh.grow_patterns = c.grow_patterns ? 1 : 0;
    lh.gate = static_cast<std::uint32_t>(c.gate);
    lh.kmeans_iterations = static_cast<std::uint32_t>(c.kmeans_iterations);
    lh.gate_alpha_bits = std::bit_cast<std::uint64_t>(c.gate_alpha);
    lh.seed = c.seed;
    lh.kmeans_tolerance_bits = std::bit_cast<std::uint32_t>(c.kmeans_tolerance);
    lh.softmax_scale_bits = std::bit_cast<std::uint32_t>(c.softmax_scale);
    lh.batch = s.batch;
    lh.backend = static_cast<std::uint32_t>(s.impl->kind());
    lh.max_tokens = s.max_tokens;
    lh.k_code_words = static_cast<std::uint32_t>(g.k_code_words());
    lh.k_groups = static_cast<std::uint32_t>(g.k_groups());
    lh.v_code_words = static_cast<std::uint32_t>(g.v_code_words());
    lh.v_groups = static_cast<std::uint32_t>(g.v_groups());
    lh.index_bytes = static_cast<std::uint32_t>(g.v_index_bytes());
    lh.k_patterns = c.k_patterns ? 1 : 0;
    lh.k_channel_select = c.k_channel_select ? 1 : 0;
    lh.tokens_per_pattern = c.tokens_per_pattern;
    lh.gate_words = static_cast<std::uint32_t>(g.gate_words());
    lh.bank_capacity = static_cast<std::uint32_t>(s.bank_capacity);
    lh.table_bytes = table.size();
    lh.table_crc = detail::crc32c(table.data(), table.size());

    const std::size_t header_at = out.size();
    put(out, lh);  // rewritten below once the payload's size and checksum are known
    out.insert(out.end(), table.begin(), table.end());
    const std::size_t payload_at = out.size();
    for (int seq = 0; seq < s.batch; ++seq)
        for (int h = 0; h < s.heads(); ++h) {
            for (const section id : all_sections)
                for_each_run(s, id, seq, h, [&](const std::uint8_t* p, std::uint64_t n) {
                    if (n != 0) out.insert(out.end(), p, p + n);
                });
        }
    lh.payload_bytes = out.size() - payload_at;
    lh.payload_crc = detail::crc32c(out.data() + payload_at, lh.payload_bytes);
    lh.header_crc = detail::crc32c(&lh, offsetof(layer_header, header_crc));
    std::memcpy(out.data() + header_at, &lh, sizeof lh);
}

std::vector<std::uint8_t> write_file(std::span<const layer_cache* const> layers) {
    if (layers.empty()) throw error("serialize_model: no layers (a file holds >= 1)");
    for (std::size_t i = 0; i < layers.size(); ++i)
        if (layers[i] == nullptr) throw error(fmt::format("serialize_model: layer {} is a null pointer", i));
    std::vector<std::uint8_t> out(sizeof(file_header));
    for (std::size_t i = 0; i < layers.size(); ++i) write_layer(out, *layers[i], static_cast<std::uint32_t>(i));
    file_header fh{};
    std::memcpy(fh.magic, detail::file_magic, sizeof fh.magic);
    fh.version = detail::format_version;
    fh.endian = detail::endian_marker;
    fh.header_bytes = sizeof(file_header);
    fh.layer_count = static_cast<std::uint32_t>(layers.size());
    fh.file_bytes = out.size();
    fh.library_version = PATTERNKV_VERSION;
    fh.header_crc = detail::crc32c(&fh, offsetof(file_header, header_crc));
    std::memcpy(out.data(), &fh, sizeof fh);
    return out;
}

void write_to_path(const std::vector<std::uint8_t>& bytes, const std::string& path) {
    const std::string tmp = path + ".tmp";
    {
        std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
        if (!f) throw error(fmt::format("save: cannot open '{}' for writing", tmp));
        f.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
        f.flush();
        if (!f) {
            std::error_code ignored;
            std::filesystem::remove(tmp, ignored);
            throw error(fmt::format("save: writing {} bytes to '{}' failed", bytes.size(), tmp));
        }
    }
    std::error_code ec;
    std::filesystem::rename(tmp, path, ec);
    if (ec) {
        std::error_code ignored;
        std::filesystem::remove(tmp, ignored);
        throw error(fmt::format("save: cannot rename '{}' to '{}': {}", tmp, path, ec.message()));
    }
}

// ---------------------------------------------------------------------------------------------
// reader: everything below only reads the file image until every check has passed.

[[noreturn]] void corrupt(const std::string& what) { throw error("cache file: " + what); }

std::uint64_t mul(std::uint64_t a, std::uint64_t b) {
    std::uint64_t r;
    if (__builtin_mul_overflow(a, b, &r)) corrupt("sizes overflow 64 bits (corrupt dimensions)");
    return r;
}
std::uint64_t add(std::uint64_t a, std::uint64_t b) {
    std::uint64_t r;
    if (__builtin_add_overflow(a, b, &r)) corrupt("sizes overflow 64 bits (corrupt dimensions)");
    return r;
}

// A validated layer: its config and counters, and where its payload lies in the image.
struct parsed_layer {
    config cfg;
    int batch = 0;
    std::int64_t capacity = 0;  // max_tokens the cache will be built with
    core::page_geometry geom{};
    int bank_capacity = 0;
    std::vector<seq_entry> seqs;
    std::vector<bank_entry> banks;
    const std::uint8_t* payload = nullptr;
};

config config_of(const layer_header& h, std::uint32_t layer) {
    const auto field_error = [&](const char* field, std::uint64_t v, const char* allowed) {
        corrupt(fmt::format("layer {}: {} = {} in the header ({})", layer, field, v, allowed));
    };
    if (h.k_mode > 1) field_error("k_mode", h.k_mode, "0 per_channel or 1 per_token");
    if (h.gate > 2) field_error("gate", h.gate, "0 z_test, 1 always or 2 never");
    if (h.grow_patterns > 1) field_error("grow_patterns", h.grow_patterns, "0 or 1");
    if (h.k_patterns > 1) field_error("k_patterns", h.k_patterns, "0 or 1");
    if (h.k_channel_select > 1) field_error("k_channel_select", h.k_channel_select, "0 or 1");
    if (h.reserved != 0) field_error("reserved", h.reserved, "must be 0");
    if (h.kmeans_iterations > static_cast<std::uint32_t>(std::numeric_limits<int>::max()))
        field_error("kmeans_iterations", h.kmeans_iterations, "must fit an int");
    config c;
    c.head_dim = h.head_dim;
    c.num_kv_heads = h.num_kv_heads;
    c.num_q_heads = h.num_q_heads;
    c.k_bits = h.k_bits;
    c.v_bits = h.v_bits;
    c.k_mode = static_cast<k_quant_mode>(h.k_mode);
    c.k_group = h.k_group;
    c.k_token_group = h.k_token_group;
    c.v_group = h.v_group;
    c.residual_length = h.residual_length;
    c.num_patterns = h.num_patterns;
    c.sink_tokens = h.sink_tokens;
    c.max_patterns = h.max_patterns;
    c.grow_patterns = h.grow_patterns != 0;
    c.k_patterns = h.k_patterns != 0;
    c.k_channel_select = h.k_channel_select != 0;
    c.tokens_per_pattern = h.tokens_per_pattern;
    c.gate = static_cast<gate_mode>(h.gate);
    c.gate_alpha = std::bit_cast<double>(h.gate_alpha_bits);
    c.kmeans_iterations = static_cast<int>(h.kmeans_iterations);
    c.kmeans_tolerance = std::bit_cast<float>(h.kmeans_tolerance_bits);
    c.seed = h.seed;
    c.softmax_scale = std::bit_cast<float>(h.softmax_scale_bits);
    try {
        c.validate();
    } catch (const error& e) {
        corrupt(fmt::format("layer {}: the stored config is invalid: {}", layer, e.what()));
    }
    return c;
}

void check_geometry(const layer_header& h, const core::page_geometry& g, int bank_capacity, std::uint32_t layer) {
    const auto same = [&](const char* field, std::uint64_t stored, std::uint64_t implied) {
        if (stored != implied)
            corrupt(fmt::format("layer {}: {} = {} in the header, but the config implies {}", layer, field, stored, implied));
    };
    same("k_code_words", h.k_code_words, static_cast<std::uint64_t>(g.k_code_words()));
    same("k_groups", h.k_groups, static_cast<std::uint64_t>(g.k_groups()));
    same("v_code_words", h.v_code_words, static_cast<std::uint64_t>(g.v_code_words()));
    same("v_groups", h.v_groups, static_cast<std::uint64_t>(g.v_groups()));
    same("index_bytes", h.index_bytes, static_cast<std::uint64_t>(g.v_index_bytes()));
    same("gate_words", h.gate_words, static_cast<std::uint64_t>(g.gate_words()));
    same("bank_capacity", h.bank_capacity, static_cast<std::uint64_t>(bank_capacity));
}

bool finite_half(std::uint16_t h) { return (h & 0x7c00u) != 0x7c00u; }

// Content checks of one section of one (sequence, head): what the kernels rely on for memory
// safety (pattern indices inside the bank) and the cache's own invariants (finite fp16 values,
// window values within the input range).
void check_section(section id, const std::uint8_t* p, std::uint64_t elements, const head_counts& n, const core::page_geometry& g,
                   std::uint32_t layer, int seq, int h) {
    const auto where = [&] { return fmt::format("layer {}, sequence {}, kv head {}", layer, seq, h); };
    switch (id) {
        case section::k_index:
        case section::v_index: {
            const std::uint64_t bank = id == section::k_index ? n.k_bank : n.v_bank;
            const std::uint64_t limit = std::max<std::uint64_t>(bank, 1);  // pages encoded before any pattern carry 0
            const std::uint64_t pages = g.index_bytes() == 0 ? 0 : elements / g.index_bytes();
            for (std::uint64_t pg = 0; pg < pages; ++pg)
                for (int t = 0; t < g.tokens; ++t) {
                    const auto a = static_cast<std::uint64_t>(core::pattern_index(p + pg * g.index_bytes(), t, g.index_bits));
                    if (a >= limit)
                        corrupt(fmt::format("{}: {} {} = {} is not below the bank size {}", where(), section_name(id), pg * g.tokens + t, a,
                                            bank));
                }
            return;
        }
        case section::k_sm:
        case section::v_sm:
        case section::k_bank:
        case section::v_bank:
        case section::window_k:
        case section::window_v: {
            const bool window = id == section::window_k || id == section::window_v;
            const std::uint64_t halves = elements * (element_bytes(id) / 2);
            for (std::uint64_t i = 0; i < halves; ++i) {
                std::uint16_t x;
                std::memcpy(&x, p + 2 * i, 2);
                if (!finite_half(x) || (window && std::fabs(core::half_to_float(x)) > core::max_abs_input))
                    corrupt(fmt::format("{}: {} value {} (fp16 0x{:04x}) is not finite{}", where(), section_name(id), i, x,
                                        window ? fmt::format(" or exceeds |x| <= {}", core::max_abs_input) : ""));
            }
            return;
        }
        default:
            return;  // codes and gate bits: every bit pattern is a valid encoding
    }
}

// Validates the layer starting at image[at], whose header was read; returns where it ends.
std::uint64_t parse_layer(std::span<const std::uint8_t> image, std::uint64_t at, std::uint32_t layer, const load_options& options,
                          parsed_layer& out) {
    const std::uint64_t size = image.size();
    if (size - at < sizeof(layer_header))
        corrupt(fmt::format("truncated: layer {} header needs {} bytes at offset {}, only {} remain", layer, sizeof(layer_header), at,
                            size - at));
    layer_header h;
    std::memcpy(&h, image.data() + at, sizeof h);
    if (std::memcmp(h.magic, detail::layer_magic, sizeof h.magic) != 0)
        corrupt(fmt::format("layer {}: bad layer magic at offset {} (expected \"PKVLAYER\")", layer, at));
    const std::uint32_t crc = detail::crc32c(&h, offsetof(layer_header, header_crc));
    if (crc != h.header_crc)
        corrupt(fmt::format("layer {}: header checksum mismatch (stored 0x{:08x}, computed 0x{:08x}): header corrupt", layer, h.header_crc,
                            crc));
    if (h.header_bytes != sizeof(layer_header))
        corrupt(fmt::format("layer {}: header_bytes = {} (expected {})", layer, h.header_bytes, sizeof(layer_header)));
    if (h.layer_index != layer) corrupt(fmt::format("layer {}: layer_index = {} in its header", layer, h.layer_index));
    if (h.backend > static_cast<std::uint32_t>(backend::hip))
        corrupt(fmt::format("layer {}: backend = {} in the header (0 cpu, 1 cuda, 2 hip)", layer, h.backend));

    out.cfg = config_of(h, layer);
    out.geom = geometry_of(out.cfg);
    out.bank_capacity = out.cfg.bank_capacity();
    check_geometry(h, out.geom, out.bank_capacity, layer);
    if (h.batch < 1) corrupt(fmt::format("layer {}: batch = {} (must be >= 1)", layer, h.batch));
    if (h.max_tokens < 1 || h.max_tokens > std::numeric_limits<std::int32_t>::max())
        corrupt(fmt::format("layer {}: max_tokens = {} (must be in [1, 2^31 - 1])", layer, h.max_tokens));
    out.batch = h.batch;
    const std::uint64_t H = static_cast<std::uint64_t>(out.cfg.num_kv_heads), B = static_cast<std::uint64_t>(h.batch);
    const std::uint64_t table_bytes = add(mul(B, sizeof(seq_entry)), mul(mul(B, H), sizeof(bank_entry)));
    if (h.table_bytes != table_bytes)
        corrupt(fmt::format("layer {}: table_bytes = {}, but batch {} x {} kv heads implies {}", layer, h.table_bytes, B, H, table_bytes));
    at += sizeof(layer_header);
    if (size - at < table_bytes)
        corrupt(fmt::format("truncated: layer {} sequence table needs {} bytes at offset {}, only {} remain", layer, table_bytes, at,
                            size - at));
    const std::uint8_t* table = image.data() + at;
    if (const std::uint32_t tcrc = detail::crc32c(table, table_bytes); tcrc != h.table_crc)
        corrupt(fmt::format("layer {}: sequence table checksum mismatch (stored 0x{:08x}, computed 0x{:08x})", layer, h.table_crc, tcrc));
    out.seqs.resize(B);
    out.banks.resize(B * H);
    std::memcpy(out.seqs.data(), table, B * sizeof(seq_entry));
    std::memcpy(out.banks.data(), table + B * sizeof(seq_entry), B * H * sizeof(bank_entry));
    at += table_bytes;

    // counters against the geometry and the capacities
    const std::uint64_t R = static_cast<std::uint64_t>(out.geom.tokens);
    std::uint64_t longest = 0, payload = 0, pages = 0;
    for (std::uint64_t seq = 0; seq < B; ++seq) {
        const seq_entry& e = out.seqs[seq];
        const std::uint64_t rows = static_cast<std::uint64_t>(out.geom.window_rows()), sink = static_cast<std::uint64_t>(out.geom.sink);
        if (e.window_count > rows)
            corrupt(fmt::format("layer {}, sequence {}: window_count = {} (must be <= sink_tokens + residual_length = {})", layer, seq,
                                e.window_count, rows));
        if (e.pages > 0 && e.window_count < sink)
            corrupt(fmt::format("layer {}, sequence {}: {} pages but window_count = {} (pages follow a full sink of {} rows)", layer, seq,
                                e.pages, e.window_count, sink));
        const std::uint64_t tokens = static_cast<std::uint64_t>(e.pages) * R + e.window_count;
        if (tokens > static_cast<std::uint64_t>(h.max_tokens))
            corrupt(fmt::format("layer {}, sequence {}: {} tokens ({} pages + {} window) exceed the stored max_tokens = {}", layer, seq,
                                tokens, e.pages, e.window_count, h.max_tokens));
        longest = std::max(longest, tokens);
        pages += e.pages;
        for (std::uint64_t hd = 0; hd < H; ++hd) {
            const bank_entry& b = out.banks[seq * H + hd];
            for (const std::uint32_t n : {b.k_bank_size, b.v_bank_size}) {
                if (n > static_cast<std::uint32_t>(out.bank_capacity))
                    corrupt(fmt::format("layer {}, sequence {}, kv head {}: bank size {} exceeds the bank capacity {}", layer, seq, hd, n,
                                        out.bank_capacity));
                if (n != 0 && tokens == 0)
                    corrupt(fmt::format("layer {}, sequence {}, kv head {}: bank size {} for an empty sequence", layer, seq, hd, n));
            }
            const head_counts n{e.pages, e.window_count, b.k_bank_size, b.v_bank_size};
            for (const section id : all_sections) payload = add(payload, mul(section_elements(out.geom, id, n), element_bytes(id)));
        }
    }
    out.capacity = options.max_tokens == 0 ? h.max_tokens : options.max_tokens;
    if (static_cast<std::uint64_t>(out.capacity) < longest)
        throw error(fmt::format("load: max_tokens = {} is below the {} tokens of the longest stored sequence (layer {})", out.capacity,
                                longest, layer));
    if (h.payload_bytes != payload)
        corrupt(fmt::format("layer {}: payload_bytes = {}, but the stored counters and config imply {}", layer, h.payload_bytes, payload));
    if (size - at < payload)
        corrupt(fmt::format("truncated: layer {} payload needs {} bytes at offset {}, only {} remain", layer, payload, at, size - at));
    out.payload = image.data() + at;
    if (const std::uint32_t pcrc = detail::crc32c(out.payload, payload); pcrc != h.payload_crc)
        corrupt(fmt::format("layer {}: payload checksum mismatch (stored 0x{:08x}, computed 0x{:08x}): data corrupt", layer, h.payload_crc,
                            pcrc));
    // the cache it becomes: the constructor's layout (core/cache_layout.hpp), checked before any allocation
    const core::cache_layout layout = layout_of(out.cfg, cache_capacity{out.batch, out.capacity, options.pool_pages});
    if (pages > static_cast<std::uint64_t>(layout.pool_pages))
        throw error(fmt::format("load: layer {} stores {} pages, more than a pool of {} (load_options::pool_pages = {})", layer, pages,
                                layout.pool_pages, options.pool_pages));
    if (options.max_reserved_bytes != 0) {
        const long double need = layout.reserved_bytes(out.batch, out.cfg.num_q_heads);
        if (need > static_cast<long double>(options.max_reserved_bytes))
            throw error(fmt::format("load: layer {} would reserve {:.0f} bytes, above load_options::max_reserved_bytes = {}", layer,
                                    static_cast<double>(need), options.max_reserved_bytes));
    }

    // payload contents
    const std::uint8_t* p = out.payload;
    for (std::uint64_t seq = 0; seq < B; ++seq)
        for (std::uint64_t hd = 0; hd < H; ++hd) {
            const bank_entry& b = out.banks[seq * H + hd];
            const head_counts n{out.seqs[seq].pages, out.seqs[seq].window_count, b.k_bank_size, b.v_bank_size};
            for (const section id : all_sections) {
                const std::uint64_t elements = section_elements(out.geom, id, n);
                check_section(id, p, elements, n, out.geom, layer, static_cast<int>(seq), static_cast<int>(hd));
                p += elements * element_bytes(id);
            }
        }
    return at + payload;
}

std::vector<parsed_layer> parse_file(std::span<const std::uint8_t> image, const load_options& options) {
    if (options.max_tokens < 0) throw error(fmt::format("load: max_tokens = {} must be >= 0 (0 = as stored)", options.max_tokens));
    const std::uint64_t size = image.size();
    constexpr std::uint64_t fh_size = sizeof(file_header);
    if (size < sizeof detail::file_magic)
        corrupt(
            fmt::format("truncated: {} bytes, less than the {}-byte magic (not a PatternKV cache file?)", size, sizeof detail::file_magic));
    if (std::memcmp(image.data(), detail::file_magic, sizeof detail::file_magic) != 0)
        corrupt("bad magic: not a PatternKV cache file (expected \"PKVCACHE\")");
    if (size < offsetof(file_header, endian))
        corrupt(fmt::format("truncated: {} bytes, the format version ends at byte {}", size, offsetof(file_header, endian)));
    std::uint32_t version;
    std::memcpy(&version, image.data() + offsetof(file_header, version), 4);
    if (version != detail::format_version)
        corrupt(fmt::format("unsupported format version {} (this library reads version {})", version, detail::format_version));
    if (size < fh_size) corrupt(fmt::format("truncated: {} bytes, less than the {}-byte file header", size, fh_size));
    file_header fh;
    std::memcpy(&fh, image.data(), sizeof fh);
    if (fh.endian != detail::endian_marker)
        corrupt(fmt::format("endianness marker 0x{:08x} (expected 0x{:08x}{})", fh.endian, detail::endian_marker,
                            fh.endian == 0x04030201u ? ": the file is byte-swapped (big-endian)" : ""));
    if (const std::uint32_t crc = detail::crc32c(&fh, offsetof(file_header, header_crc)); crc != fh.header_crc)
        corrupt(fmt::format("file header checksum mismatch (stored 0x{:08x}, computed 0x{:08x}): header corrupt", fh.header_crc, crc));
    if (fh.header_bytes != fh_size) corrupt(fmt::format("header_bytes = {} (expected {})", fh.header_bytes, fh_size));
    if (fh.flags != 0 || fh.reserved != 0) corrupt(fmt::format("flags = {}, reserved = {} (must be 0)", fh.flags, fh.reserved));
    if (fh.file_bytes != size)
        corrupt(fmt::format("{}: the header says the file holds {} bytes, but it has {}",
                            size < fh.file_bytes ? "truncated" : "trailing bytes", fh.file_bytes, size));
    if (fh.layer_count == 0) corrupt("layer_count = 0 (a file holds >= 1 layer)");
    // every layer has at least a header, which bounds layer_count by the file size before any allocation
    if (fh.layer_count > (size - fh_size) / sizeof(layer_header))
        corrupt(fmt::format("layer_count = {} cannot fit in {} bytes", fh.layer_count, size));

    std::vector<parsed_layer> layers(fh.layer_count);
    std::uint64_t at = fh_size;
    for (std::uint32_t i = 0; i < fh.layer_count; ++i) at = parse_layer(image, at, i, options, layers[i]);
    if (at != size) corrupt(fmt::format("{} unexplained bytes after the last layer", size - at));
    return layers;
}

layer_cache build(const parsed_layer& p, const load_options& options) {
    std::optional<layer_cache> made;
    try {
        made.emplace(p.cfg, cache_capacity{p.batch, p.capacity, options.pool_pages}, options.where);
    } catch (const std::bad_alloc&) {
        throw error(fmt::format("load: cannot reserve memory for batch {} x max_tokens {} ({})", p.batch, p.capacity, p.cfg.describe()));
    }
    layer_cache_state& s = detail::cache_io::state(*made);
    s.allocate_host_arrays();  // filled here, then copied to a GPU cache's device
    const std::uint8_t* src = p.payload;
    const int H = s.heads();
    for (int seq = 0; seq < s.batch; ++seq) {
        s.take_pages(seq, 0, static_cast<int>(p.seqs[seq].pages));  // the reader checked the pool holds them all
        s.pages[seq] = static_cast<int>(p.seqs[seq].pages);
        s.window_count[seq] = static_cast<int>(p.seqs[seq].window_count);
        for (int h = 0; h < H; ++h) {
            const bank_entry& b = p.banks[static_cast<std::size_t>(seq) * H + h];
            s.k_bank_size[s.sh(seq, h)] = static_cast<int>(b.k_bank_size);
            s.v_bank_size[s.sh(seq, h)] = static_cast<int>(b.v_bank_size);
            for (const section id : all_sections)
                for_each_run(s, id, seq, h, [&](std::uint8_t* p, std::uint64_t n) {
                    if (n != 0) std::memcpy(p, src, n);
                    src += n;
                });
        }
    }
    s.impl->sync_from_host(s);
    if (options.where != backend::cpu) s.release_host_arrays();  // the device holds the data now
    return std::move(*made);
}

std::vector<std::uint8_t> read_path(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    if (!f) throw error("load: cannot open the file for reading");
    f.seekg(0, std::ios::end);
    const std::streamoff n = f.tellg();
    if (n < 0) throw error("load: cannot determine the file size");
    f.seekg(0, std::ios::beg);
    std::vector<std::uint8_t> bytes(static_cast<std::size_t>(n));
    f.read(reinterpret_cast<char*>(bytes.data()), n);
    if (f.gcount() != n) throw error(fmt::format("load: reading {} bytes failed", n));
    return bytes;
}

template <class F>
auto with_path(const std::string& path, F f) {
    try {
        return f();
    } catch (const error& e) {
        throw error(fmt::format("{}: {}", path, e.what()));
    }
}

}  // namespace

std::vector<std::uint8_t> serialize_layer(const layer_cache& cache) {
    const layer_cache* one[] = {&cache};
    return write_file(one);
}

std::vector<std::uint8_t> serialize_model(std::span<const layer_cache* const> layers) { return write_file(layers); }

std::vector<std::uint8_t> serialize_model(std::span<const layer_cache> layers) {
    std::vector<const layer_cache*> ptrs;
    for (const layer_cache& c : layers) ptrs.push_back(&c);
    return write_file(ptrs);
}

void save_layer(const layer_cache& cache, const std::string& path) { write_to_path(serialize_layer(cache), path); }
void save_model(std::span<const layer_cache> layers, const std::string& path) { write_to_path(serialize_model(layers), path); }
void save_model(std::span<const layer_cache* const> layers, const std::string& path) { write_to_path(serialize_model(layers), path); }

std::vector<layer_cache> deserialize_model(std::span<const std::uint8_t> bytes, const load_options& options) {
    const std::vector<parsed_layer> parsed = parse_file(bytes, options);
    std::vector<layer_cache> caches;
    caches.reserve(parsed.size());
    for (const parsed_layer& p : parsed) caches.push_back(build(p, options));
    return caches;
}

layer_cache deserialize_layer(std::span<const std::uint8_t> bytes, const load_options& options) {
    const std::vector<parsed_layer> parsed = parse_file(bytes, options);
    if (parsed.size() != 1) throw error(fmt::format("load: the file holds {} layers; use load_model / deserialize_model", parsed.size()));
    return build(parsed[0], options);
}

layer_cache load_layer(const std::string& path, const load_options& options) {
    return with_path(path, [&] { return deserialize_layer(read_path(path), options); });
}

std::vector<layer_cache> load_model(const std::string& path, const load_options& options) {
    return with_path(path, [&] { return deserialize_model(read_path(path), options); });
}

}  // namespace patternkv

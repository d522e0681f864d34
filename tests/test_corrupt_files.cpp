// Truncated, corrupted, wrong-version and inconsistent cache files: each load throws a
// patternkv::error saying what is wrong, before any cache is built, and never reads out of bounds
// (run under ASan/UBSan by tools/ci-sanitizers.sh).
#include <cstring>
#include <optional>

#include "src/file_format.hpp"
#include "src/layer_cache_state.hpp"
#include "support.hpp"

namespace {

using patternkv::detail::file_header;
using patternkv::detail::layer_header;
using bytes_t = std::vector<std::uint8_t>;

constexpr int H = 2, d = 16, Hq = 4, R = 16;

patternkv::config small(patternkv::config c) {
    c = pkv_test::with_shape(c, H, d, Hq, R);
    if (c.num_patterns > 0) {
        c.num_patterns = 4;
        c.max_patterns = 8;
        c.k_patterns = true;  // every section present, K indices and bank included
    }
    return c;
}

patternkv::layer_cache filled(const patternkv::config& c, const std::vector<int>& lengths, std::uint64_t seed) {
    patternkv::layer_cache cache(c, static_cast<int>(lengths.size()), 128);
    for (std::size_t i = 0; i < lengths.size(); ++i) {
        const int T = lengths[i];
        const auto k = pkv_test::synthetic_kv(seed + i, std::max(T, 1), H, d, true);
        const auto v = pkv_test::synthetic_kv(seed + 50 + i, std::max(T, 1), H, d, false);
        cache.prefill(static_cast<int>(i), patternkv::view_f32(k.data(), T, H, d), patternkv::view_f32(v.data(), T, H, d));
    }
    return cache;
}

// Where the parts of a two-layer reference file lie.
struct layout {
    struct layer {
        std::size_t header, table, payload, end;
        layer_header h;
    };
    std::vector<layer> layers;
};

layout locate(const bytes_t& f) {
    file_header fh;
    std::memcpy(&fh, f.data(), sizeof fh);
    layout l;
    std::size_t at = sizeof(file_header);
    for (std::uint32_t i = 0; i < fh.layer_count; ++i) {
        layout::layer x{};
        std::memcpy(&x.h, f.data() + at, sizeof(layer_header));
        x.header = at;
        x.table = at + sizeof(layer_header);
        x.payload = x.table + x.h.table_bytes;
        x.end = x.payload + x.h.payload_bytes;
        at = x.end;
        l.layers.push_back(x);
    }
    return l;
}

const bytes_t& reference_file() {
    static const bytes_t f = [] {
        std::vector<patternkv::layer_cache> model;
        model.push_back(filled(small(patternkv::patternkv_config(2)), {70, 0, 37}, 1));
        model.push_back(filled(small(patternkv::kivi_config(4)), {20}, 2));
        return patternkv::serialize_model(model);
    }();
    return f;
}

// The load must throw patternkv::error mentioning `needle` (and nothing else may escape).
void expect_error(const bytes_t& f, const std::string& needle, const patternkv::load_options& o = {}) {
    try {
        (void)patternkv::deserialize_model(f, o);
        FAIL("file accepted; expected an error mentioning '" << needle << "'");
    } catch (const patternkv::error& e) {
        INFO("message: " << std::string(e.what()) << " / expected: " << needle);
        CHECK(std::string(e.what()).find(needle) != std::string::npos);
    }
}

// Either of the needles.
void expect_error_any(const bytes_t& f, std::initializer_list<const char*> needles) {
    try {
        (void)patternkv::deserialize_model(f);
        FAIL("file accepted");
    } catch (const patternkv::error& e) {
        bool found = false;
        for (const char* n : needles) found |= std::string(e.what()).find(n) != std::string::npos;
        INFO("message: " << std::string(e.what()));
        CHECK(found);
    }
}

// A copy of the reference file with `edit` applied to the header of layer `i` (checksums refreshed).
template <class Edit>
bytes_t edit_layer_header(std::size_t i, Edit edit) {
    bytes_t f = reference_file();
    const layout l = locate(f);
    layer_header h = l.layers[i].h;
    edit(h);
    std::memcpy(f.data() + l.layers[i].header, &h, sizeof h);
    patternkv::detail::refresh_checksums(f);
    return f;
}

}  // namespace

TEST_CASE("the reference file loads") {
    CHECK(patternkv::deserialize_model(reference_file()).size() == 2);
    const layout l = locate(reference_file());
    REQUIRE(l.layers.size() == 2);
    CHECK(l.layers[1].end == reference_file().size());
    MESSAGE("reference file: " << reference_file().size() << " bytes");
}

TEST_CASE("truncation at every byte of every header and table, and inside payloads") {
    const bytes_t& ref = reference_file();
    const layout l = locate(ref);
    std::vector<std::size_t> cuts;
    for (std::size_t n = 0; n <= l.layers[0].payload; ++n) cuts.push_back(n);  // file header, layer 0 header, table
    for (std::size_t n = l.layers[0].end; n <= l.layers[1].payload; ++n) cuts.push_back(n);
    for (const auto& x : l.layers)
        for (std::size_t n = x.payload; n < x.end; n += 1 + (x.end - x.payload) / 37) cuts.push_back(n);
    for (std::size_t n = ref.size() - 16; n < ref.size(); ++n) cuts.push_back(n);
    for (const std::size_t n : cuts) {
        INFO("truncated to " << n << " of " << ref.size() << " bytes");
        const bytes_t f(ref.begin(), ref.begin() + static_cast<std::ptrdiff_t>(n));
        if (n < 8)
            expect_error(f, "truncated");
        else
            expect_error(f, "truncated");
        // the same cut with a file header claiming the shorter size: the layer parser reports it
        if (n >= sizeof(file_header)) {
            bytes_t g = f;
            file_header fh;
            std::memcpy(&fh, g.data(), sizeof fh);
            fh.file_bytes = n;
            std::memcpy(g.data(), &fh, sizeof fh);
            patternkv::detail::refresh_checksums(g);
            expect_error_any(g, {"truncated", "cannot fit", "unexplained"});
        }
    }
}

TEST_CASE("every single-byte change of a header or table is rejected") {
    const bytes_t& ref = reference_file();
    const layout l = locate(ref);
    std::vector<std::size_t> offsets;
    for (std::size_t i = 0; i < l.layers[0].payload; ++i) offsets.push_back(i);
    for (std::size_t i = l.layers[1].header; i < l.layers[1].payload; ++i) offsets.push_back(i);
    for (const std::size_t i : offsets)
        for (const std::uint8_t mask : {0x01, 0x80, 0xff}) {
            INFO("byte " << i << " ^= " << int(mask));
            bytes_t f = ref;
            f[i] ^= mask;
            expect_error_any(f, {"checksum mismatch", "magic", "version", "endianness"});
        }
}

TEST_CASE("flipped payload bytes fail the payload checksum") {
    const bytes_t& ref = reference_file();
    for (const auto& x : locate(ref).layers)
        for (std::size_t i = x.payload; i < x.end; i += 1 + (x.end - x.payload) / 53) {
            INFO("byte " << i);
            bytes_t f = ref;
            f[i] ^= 0x10;
            expect_error(f, "payload checksum mismatch");
        }
}

TEST_CASE("wrong magic, version and byte order") {
    bytes_t f = reference_file();
    f[0] = 'X';
    expect_error(f, "bad magic");
    expect_error(bytes_t{'h', 'e', 'l', 'l', 'o', ' ', 'w', 'o', 'r', 'l', 'd'}, "bad magic");
    expect_error(bytes_t{}, "truncated");

    f = reference_file();
    file_header fh;
    std::memcpy(&fh, f.data(), sizeof fh);
    fh.version = 4;  // no tokens_per_pattern
    std::memcpy(f.data(), &fh, sizeof fh);
    patternkv::detail::refresh_checksums(f);
    expect_error(f, "unsupported format version 4 (this library reads version " + std::to_string(patternkv::detail::format_version) + ")");

    f = reference_file();
    fh.version = patternkv::detail::format_version;
    fh.endian = 0x04030201u;
    std::memcpy(f.data(), &fh, sizeof fh);
    expect_error(f, "byte-swapped");

    f = reference_file();
    std::memcpy(f.data() + locate(f).layers[1].header, "PKVLAYRR", 8);
    patternkv::detail::refresh_checksums(f);
    expect_error(f, "layer 1: bad layer magic");
}

TEST_CASE("file-level sizes: trailing bytes, layer counts") {
    bytes_t f = reference_file();
    f.push_back(0);
    expect_error(f, "trailing bytes");
    file_header fh;
    std::memcpy(&fh, f.data(), sizeof fh);
    fh.file_bytes = f.size();
    std::memcpy(f.data(), &fh, sizeof fh);
    patternkv::detail::refresh_checksums(f);
    expect_error(f, "unexplained bytes");

    for (const std::uint32_t n : {0u, 1u, 3u, 1000000u, 0xffffffffu}) {
        INFO("layer_count " << n);
        f = reference_file();
        std::memcpy(&fh, f.data(), sizeof fh);
        fh.layer_count = n;
        std::memcpy(f.data(), &fh, sizeof fh);
        patternkv::detail::refresh_checksums(f);
        expect_error_any(f, {"layer_count", "unexplained bytes", "truncated"});
    }
    f = reference_file();
    std::memcpy(&fh, f.data(), sizeof fh);
    fh.flags = 1;
    std::memcpy(f.data(), &fh, sizeof fh);
    patternkv::detail::refresh_checksums(f);
    expect_error(f, "flags = 1");
}

TEST_CASE("configs and dimensions inconsistent with the payload are named") {
    expect_error(edit_layer_header(0, [](layer_header& h) { h.k_bits = 5; }),
                 "layer 0: the stored config is invalid: invalid config: k_bits = 5");
    expect_error(edit_layer_header(0, [](layer_header& h) { h.head_dim = 0; }), "head_dim = 0");
    expect_error(edit_layer_header(1, [](layer_header& h) { h.num_q_heads = 3; }), "num_q_heads = 3");
    expect_error(edit_layer_header(0, [](layer_header& h) { h.gate = 9; }), "gate = 9");
    expect_error(edit_layer_header(0, [](layer_header& h) { h.k_mode = 2; }), "k_mode = 2");
    expect_error(edit_layer_header(0, [](layer_header& h) { h.grow_patterns = 2; }), "grow_patterns = 2");
    expect_error(edit_layer_header(0, [](layer_header& h) { h.gate_alpha_bits = std::bit_cast<std::uint64_t>(0.7); }), "gate_alpha");
    expect_error(edit_layer_header(0, [](layer_header& h) { h.kmeans_iterations = 0x80000000u; }), "kmeans_iterations");
    // a valid config of another shape: the stored geometry no longer matches it
    expect_error(edit_layer_header(0, [](layer_header& h) { h.head_dim = 32; }), "k_code_words = ");
    expect_error(edit_layer_header(0, [](layer_header& h) { h.k_bits = 4; }), "k_code_words = ");
    expect_error(edit_layer_header(0, [](layer_header& h) { h.max_patterns = 9; }),
                 "bank_capacity = 8 in the header, but the config implies 9");
    expect_error(edit_layer_header(0, [](layer_header& h) { h.v_group = 8; }), "v_groups = ");
    // ... and with geometry fixed up too, the sizes no longer add up
    expect_error(edit_layer_header(0,
                                   [](layer_header& h) {
                                       h.k_bits = 4;
                                       h.k_code_words = 16 * 2;
                                   }),
                 "payload_bytes = ");
    expect_error(edit_layer_header(0,
                                   [](layer_header& h) {
                                       h.num_kv_heads = 1;
                                       h.num_q_heads = 2;
                                   }),
                 "table_bytes = ");
    expect_error(edit_layer_header(0, [](layer_header& h) { h.batch = 0; }), "batch = 0");
    expect_error(edit_layer_header(0, [](layer_header& h) { h.batch = 0x7fffffff; }), "table_bytes");
    expect_error(edit_layer_header(0,
                                   [](layer_header& h) {
                                       h.num_kv_heads = 0x7fffffff;
                                       h.num_q_heads = 0x7fffffff;
                                   }),
                 "table_bytes");
    expect_error(edit_layer_header(0, [](layer_header& h) { h.max_tokens = 0; }), "max_tokens = 0");
    expect_error(edit_layer_header(0, [](layer_header& h) { h.max_tokens = std::int64_t{1} << 40; }), "max_tokens = 1099511627776");
    expect_error(edit_layer_header(0, [](layer_header& h) { h.max_tokens = 50; }), "exceed the stored max_tokens = 50");
    expect_error(edit_layer_header(0, [](layer_header& h) { h.payload_bytes += 4; }), "payload_bytes = ");
    expect_error(edit_layer_header(0, [](layer_header& h) { h.payload_bytes = ~std::uint64_t{0}; }), "payload_bytes = ");
    expect_error(edit_layer_header(0, [](layer_header& h) { h.table_bytes = ~std::uint64_t{0}; }), "table_bytes = ");
    expect_error(edit_layer_header(0, [](layer_header& h) { h.header_bytes = 100; }), "header_bytes = 100");
    expect_error(edit_layer_header(1, [](layer_header& h) { h.layer_index = 0; }), "layer 1: layer_index = 0");
    expect_error(edit_layer_header(1, [](layer_header& h) { h.k_channel_select = 7; }), "k_channel_select = 7");
    expect_error(edit_layer_header(1, [](layer_header& h) { h.k_patterns = 2; }), "k_patterns = 2");
    expect_error(edit_layer_header(1, [](layer_header& h) { h.reserved = 1; }), "reserved = 1");
    expect_error(edit_layer_header(0, [](layer_header& h) { h.tokens_per_pattern = -3; }), "tokens_per_pattern");
}

TEST_CASE("sequence tables and payload contents that break invariants are named") {
    const layout l = locate(reference_file());
    const auto edited = [&](std::size_t offset, auto value) {
        bytes_t f = reference_file();
        std::memcpy(f.data() + offset, &value, sizeof value);
        patternkv::detail::refresh_checksums(f);
        return f;
    };
    const std::size_t t0 = l.layers[0].table;  // seq entries {pages, window_count} x 3, then bank entries x 6
    // layer 0 keeps one sink row before its windows
    expect_error(edited(t0 + 4, std::uint32_t{R + 2}), "sequence 0: window_count = 18 (must be <= sink_tokens + residual_length = 17)");
    expect_error(edited(t0, std::uint32_t{1000}), "exceed the stored max_tokens");
    expect_error(edited(t0, std::uint32_t{0xffffffffu}), "exceed the stored max_tokens");
    expect_error(edited(t0 + 24, std::uint32_t{9}), "bank size 9 exceeds the bank capacity 8");
    expect_error(edited(t0 + 24 + 2 * 8 + 4, std::uint32_t{1}), "sequence 1, kv head 0: bank size 1 for an empty sequence");
    expect_error(edited(t0 + 8, std::uint32_t{1}), "sequence 1: 1 pages but window_count = 0 (pages follow a full sink of 1 rows)");
    expect_error(edited(t0 + 12, std::uint32_t{1}), "payload_bytes = ");  // counters no longer match the payload
    const std::size_t t1 = l.layers[1].table;                             // KIVI: no patterns, capacity 0
    expect_error(edited(t1 + 8, std::uint32_t{1}), "bank size 1 exceeds the bank capacity 0");

    // payload of layer 0, (seq 0, head 0): 4 pages of K codes, K sm, V codes, V sm, K index, ...
    const patternkv::layer_cache probe(small(patternkv::patternkv_config(2)), 1, 16);
    const auto& g = patternkv::state_of(probe).geom;
    const std::size_t pages = 4, p0 = l.layers[0].payload;
    const std::size_t k_index = p0 + pages * (4 * g.k_code_words() + 4 * g.k_groups() + 4 * g.v_code_words() + 4 * g.v_groups());
    const std::size_t v_index = k_index + pages * g.k_index_bytes();
    const std::size_t k_bank = v_index + pages * g.v_index_bytes() + pages * 4 * g.gate_words();
    REQUIRE(g.index_bits == 4);  // max_patterns 8: two indices per byte, the first in the low nibble
    expect_error(edited(k_index + 5, std::uint8_t{0xf0}), "K pattern indices 11 = 15 is not below the bank size");
    expect_error(edited(v_index + 31, std::uint8_t{0x08}), "V pattern indices 62 = 8 is not below the bank size");
    expect_error(edited(k_bank + 2 * 3, std::uint16_t{0x7e00}), "K pattern bank value 3 (fp16 0x7e00) is not finite");
    expect_error(edited(p0 + pages * 4 * g.k_code_words() + 2, std::uint16_t{0x7c00}), "K scales/mins value 1");
    // window of layer 1 (KIVI, one sequence of 20 tokens: 1 page + 4 window rows), head 0 then head 1
    const std::size_t w_end = l.layers[1].end;
    expect_error(edited(w_end - 2, std::uint16_t{0x7c00}), "V window value 63 (fp16 0x7c00) is not finite");
    expect_error(edited(w_end - 2, std::uint16_t{0x7800}), "exceeds |x| <= 16384");  // 32768
}

TEST_CASE("load options guard capacity and memory") {
    patternkv::load_options o;
    o.max_tokens = 69;
    expect_error(reference_file(), "max_tokens = 69 is below the 70 tokens", o);
    o = {};
    o.max_reserved_bytes = 1000;
    expect_error(reference_file(), "max_reserved_bytes = 1000", o);
    o.max_reserved_bytes = 1u << 30;
    CHECK(patternkv::deserialize_model(reference_file(), o).size() == 2);
    // a huge but consistent capacity in an untrusted file is refused before anything is reserved
    o.max_reserved_bytes = 64u << 20;
    o.max_tokens = 0x7fffffff;
    expect_error(reference_file(), "would reserve", o);
}

// Cache files round-trip bit for bit: stored state, attention outputs, and everything that happens
// after more appends, for every quantizer family, several bit widths, ragged batches and models.
#include <cstring>
#include <filesystem>

#include "src/file_format.hpp"
#include "state_snapshot.hpp"
#include "support.hpp"

namespace {

using patternkv::config;
using patternkv::layer_cache;

constexpr int H = 2, d = 32, Hq = 4, R = 16;

config small(config c) {
    c = pkv_test::with_shape(c, H, d, Hq, R);
    if (c.num_patterns > 0) {
        c.num_patterns = 4;
        c.max_patterns = 7;         // fills up after a few flushes: flushes then stop adding patterns
        c.tokens_per_pattern = 24;  // not the default, so the round trip shows it is stored
    }
    return c;
}

// A cache whose sequences hold `lengths` tokens (prefill of lengths[i] - extra, then `extra` appends
// to every non-empty sequence), seeded by `seed`.
layer_cache make_cache(const config& c, std::vector<int> lengths, std::uint64_t seed, std::int64_t max_tokens = 256) {
    const int B = static_cast<int>(lengths.size());
    layer_cache cache(c, B, max_tokens);
    const int extra = 5;
    std::vector<int> active;
    for (int i = 0; i < B; ++i) {
        const int T = std::max(0, lengths[i] - extra);
        const auto k = pkv_test::synthetic_kv(seed + 10 * i, std::max(T, 1), H, d, true);
        const auto v = pkv_test::synthetic_kv(seed + 10 * i + 1, std::max(T, 1), H, d, false);
        cache.prefill(i, patternkv::view_f32(k.data(), T, H, d), patternkv::view_f32(v.data(), T, H, d));
        if (lengths[i] > 0) active.push_back(i);
    }
    for (int step = 0; step < extra && !active.empty(); ++step) {
        const int n = static_cast<int>(active.size());
        const auto k = pkv_test::synthetic_kv(seed + 1000 + step, n, H, d, true);
        const auto v = pkv_test::synthetic_kv(seed + 2000 + step, n, H, d, false);
        cache.append(active, patternkv::view_f32(k.data(), n, H, d), patternkv::view_f32(v.data(), n, H, d));
    }
    return cache;
}

// Live data only (pages in use, live bank rows, window rows, counters): what a file must preserve.
std::vector<std::uint8_t> live_snapshot(const layer_cache& cache) {
    const patternkv::layer_cache_state& s = patternkv::state_of(cache);
    const auto& g = s.geom;
    std::vector<std::uint8_t> out;
    const auto take = [&](const auto* p, std::size_t n) {
        const auto* b = reinterpret_cast<const std::uint8_t*>(p);
        out.insert(out.end(), b, b + n * sizeof(*p));
    };
    for (int seq = 0; seq < s.batch; ++seq) {
        take(&s.pages[seq], 1);
        take(&s.window_count[seq], 1);
        for (int h = 0; h < s.heads(); ++h) {
            const patternkv::core::head_pages hp = s.head(seq, h);  // wherever the pool put the pages
            for (int i = 0; i < s.pages[seq]; ++i) {
                const patternkv::core::page_view p = hp.page(i);
                take(p.k_codes, g.k_code_words());
                take(p.v_codes, g.v_code_words());
                take(p.k_sm, g.k_groups());
                take(p.v_sm, g.v_groups());
                take(p.k_index, g.k_index_bytes());
                take(p.v_index, g.v_index_bytes());
                take(p.v_gate, g.gate_words());
            }
            const int nk = s.k_bank_size[s.sh(seq, h)], nv = s.v_bank_size[s.sh(seq, h)];
            take(&nk, 1);
            take(&nv, 1);
            take(s.bank(false, seq, h), static_cast<std::size_t>(nk) * g.d);
            take(s.bank(true, seq, h), static_cast<std::size_t>(nv) * g.d);
            take(s.window(false, seq, h), static_cast<std::size_t>(s.window_count[seq]) * g.d);  // sink and window rows
            take(s.window(true, seq, h), static_cast<std::size_t>(s.window_count[seq]) * g.d);
        }
    }
    return out;
}

// attend() of every non-empty sequence with a seeded query, as raw output floats.
std::vector<float> attend_all(const layer_cache& cache, std::uint64_t seed) {
    std::vector<int> seqs;
    for (int i = 0; i < cache.batch(); ++i)
        if (cache.size(i) > 0) seqs.push_back(i);
    const int n = static_cast<int>(seqs.size());
    const auto q = pkv_test::normal_floats(seed, static_cast<std::size_t>(n) * Hq * d);
    std::vector<float> out(q.size(), -1.0f);
    if (n > 0) cache.attend(seqs, patternkv::view_f32(q.data(), n, Hq, d), patternkv::view_f32(out.data(), n, Hq, d));
    return out;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
    return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// Appends `steps` tokens to every sequence of both caches (crossing flushes) and checks that they
// stay identical.
void check_same_future(layer_cache& a, layer_cache& b, int steps, std::uint64_t seed) {
    const int B = a.batch();
    for (int step = 0; step < steps; ++step) {
        const auto k = pkv_test::synthetic_kv(seed + step, B, H, d, true);
        const auto v = pkv_test::synthetic_kv(seed + 500 + step, B, H, d, false);
        a.append(patternkv::view_f32(k.data(), B, H, d), patternkv::view_f32(v.data(), B, H, d));
        b.append(patternkv::view_f32(k.data(), B, H, d), patternkv::view_f32(v.data(), B, H, d));
        if (step % 7 == 0 || step == steps - 1) {
            REQUIRE(live_snapshot(a) == live_snapshot(b));
            CHECK(same_bits(attend_all(a, seed + 900 + step), attend_all(b, seed + 900 + step)));
        }
    }
}

std::uint64_t header_bytes(const layer_cache& c) {
    return sizeof(patternkv::detail::layer_header) + 8ull * c.batch() + 8ull * c.batch() * c.cfg().num_kv_heads;
}

void check_round_trip(const config& c, const std::vector<int>& lengths, std::uint64_t seed) {
    layer_cache original = make_cache(c, lengths, seed);
    const auto bytes = patternkv::serialize_layer(original);
    // only live data is stored: the payload is exactly what memory() reports
    CHECK(bytes.size() == sizeof(patternkv::detail::file_header) + header_bytes(original) + original.memory().total_bytes());
    layer_cache loaded = patternkv::deserialize_layer(bytes);
    CHECK(loaded.max_tokens() == original.max_tokens());
    CHECK(loaded.batch() == original.batch());
    CHECK(loaded.cfg().describe() == original.cfg().describe());
    CHECK(live_snapshot(loaded) == live_snapshot(original));
    // without stale data in `original` (no flush by the appends), even reserved memory matches
    bool flushed = false;
    for (std::size_t i = 0; i < lengths.size(); ++i)
        flushed |=
            original.quantized_size(static_cast<int>(i)) > patternkv::state_of(original).geom.prompt_pages(std::max(0, lengths[i] - 5)) * R;
    if (!flushed) CHECK(pkv_test::snapshot(loaded) == pkv_test::snapshot(original));
    for (int i = 0; i < original.batch(); ++i) {
        CHECK(loaded.size(i) == original.size(i));
        CHECK(loaded.quantized_size(i) == original.quantized_size(i));
        for (int h = 0; h < H; ++h) {
            CHECK(loaded.bank_size(i, h, false) == original.bank_size(i, h, false));
            CHECK(loaded.bank_size(i, h, true) == original.bank_size(i, h, true));
        }
    }
    CHECK(same_bits(attend_all(loaded, seed + 7), attend_all(original, seed + 7)));
    CHECK(patternkv::serialize_layer(loaded) == bytes);  // saving again gives the same file
    check_same_future(original, loaded, 2 * R + 3, seed + 77);
}

const std::vector<int> ragged = {37, 0, 70, 15, 3};

}  // namespace

TEST_CASE("PatternKV caches round-trip bit for bit at every bit width") {
    for (const int kb : {2, 3, 4, 8})
        for (const int vb : {2, 4}) {
            config c = small(patternkv::patternkv_config(kb));
            c.v_bits = vb;
            INFO("k_bits " << kb << " v_bits " << vb);
            check_round_trip(c, ragged, 100 + kb * 10 + vb);
        }
}

TEST_CASE("KIVI and per-token caches round-trip bit for bit") {
    for (const int bits : {2, 3, 4, 8}) {
        INFO("bits " << bits);
        check_round_trip(small(patternkv::kivi_config(bits)), ragged, 300 + bits);
        config pt = small(patternkv::per_token_config(bits));
        pt.k_token_group = 8;
        pt.v_group = 16;
        check_round_trip(pt, ragged, 400 + bits);
    }
}

TEST_CASE("gate modes, per-token K with patterns, and a bank that fills up round-trip") {
    for (const auto gate : {patternkv::gate_mode::z_test, patternkv::gate_mode::always, patternkv::gate_mode::never}) {
        config c = small(patternkv::patternkv_config(3));
        c.gate = gate;
        check_round_trip(c, {100, 50}, 500 + static_cast<int>(gate));
    }
    config pt = small(patternkv::patternkv_config(4));
    pt.k_mode = patternkv::k_quant_mode::per_token;
    pt.k_token_group = 16;
    check_round_trip(pt, {90, 1, 33}, 510);
    config nogrow = small(patternkv::patternkv_config(2));
    nogrow.grow_patterns = false;
    check_round_trip(nogrow, {90, 20}, 520);
}

TEST_CASE("patterns enabled but only appends (pages encoded before any pattern) round-trip") {
    config c = small(patternkv::patternkv_config(2));
    c.grow_patterns = false;  // the bank stays empty: pages carry index 0
    layer_cache a(c, 1, 128);
    for (int t = 0; t < 40; ++t) {
        const auto k = pkv_test::synthetic_kv(600 + t, 1, H, d, true), v = pkv_test::synthetic_kv(700 + t, 1, H, d, false);
        a.append(patternkv::view_f32(k.data(), 1, H, d), patternkv::view_f32(v.data(), 1, H, d));
    }
    CHECK(a.bank_size(0, 0, false) == 0);
    layer_cache b = patternkv::deserialize_layer(patternkv::serialize_layer(a));
    CHECK(live_snapshot(a) == live_snapshot(b));
    CHECK(same_bits(attend_all(a, 1), attend_all(b, 1)));
}

TEST_CASE("empty caches and reset sequences round-trip") {
    layer_cache empty(small(patternkv::patternkv_config(2)), 3, 64);
    const auto bytes = patternkv::serialize_layer(empty);
    layer_cache loaded = patternkv::deserialize_layer(bytes);
    CHECK(pkv_test::snapshot(loaded) == pkv_test::snapshot(empty));
    for (int i = 0; i < 3; ++i) CHECK(loaded.size(i) == 0);
    check_same_future(empty, loaded, R + 2, 800);

    // stale data left behind by reset() and flushed windows is not stored, and not needed
    layer_cache c = make_cache(small(patternkv::patternkv_config(4)), {70, 50, 20}, 810);
    c.reset(1);
    layer_cache d2 = patternkv::deserialize_layer(patternkv::serialize_layer(c));
    CHECK(live_snapshot(c) == live_snapshot(d2));
    CHECK(same_bits(attend_all(c, 3), attend_all(d2, 3)));
    const auto k = pkv_test::synthetic_kv(820, 40, H, d, true), v = pkv_test::synthetic_kv(821, 40, H, d, false);
    c.prefill(1, patternkv::view_f32(k.data(), 40, H, d), patternkv::view_f32(v.data(), 40, H, d));
    d2.prefill(1, patternkv::view_f32(k.data(), 40, H, d), patternkv::view_f32(v.data(), 40, H, d));
    check_same_future(c, d2, R + 1, 830);
}

TEST_CASE("capacity comes from the file or an override >= the longest sequence") {
    layer_cache c = make_cache(small(patternkv::patternkv_config(2)), {70, 20}, 900, 80);
    const auto bytes = patternkv::serialize_layer(c);
    CHECK(patternkv::deserialize_layer(bytes).max_tokens() == 80);
    patternkv::load_options bigger;
    bigger.max_tokens = 4096;
    layer_cache big = patternkv::deserialize_layer(bytes, bigger);
    CHECK(big.max_tokens() == 4096);
    CHECK(live_snapshot(big) == live_snapshot(c));
    CHECK(same_bits(attend_all(big, 5), attend_all(c, 5)));
    check_same_future(c, big, 10, 910);  // c is then full at 80 tokens
    patternkv::load_options tight;
    tight.max_tokens = 70;
    CHECK(patternkv::deserialize_layer(bytes, tight).max_tokens() == 70);
    tight.max_tokens = 69;
    CHECK_THROWS_WITH_AS(patternkv::deserialize_layer(bytes, tight), doctest::Contains("below the 70 tokens"), patternkv::error);
    tight.max_tokens = -1;
    CHECK_THROWS_AS(patternkv::deserialize_layer(bytes, tight), patternkv::error);
}

TEST_CASE("whole-model files: several layers with their own configs, through the file system") {
    std::vector<layer_cache> model;
    model.push_back(make_cache(small(patternkv::patternkv_config(2)), {70, 0, 30}, 1000));
    model.push_back(make_cache(small(patternkv::kivi_config(4)), {70, 0, 30}, 1001));
    config pt = small(patternkv::per_token_config(8));
    pt.num_kv_heads = 1;  // a layer of another shape
    pt.num_q_heads = 2;
    layer_cache odd(pt, 2, 100);
    model.push_back(std::move(odd));
    const auto path = (std::filesystem::temp_directory_path() / "pkv_test_model.pkv").string();
    patternkv::save_model(model, path);
    std::vector<layer_cache> loaded = patternkv::load_model(path);
    REQUIRE(loaded.size() == model.size());
    for (std::size_t i = 0; i < model.size(); ++i) {
        CHECK(live_snapshot(loaded[i]) == live_snapshot(model[i]));
        CHECK(pkv_test::snapshot(loaded[i]) == pkv_test::snapshot(model[i]));
        CHECK(loaded[i].cfg().describe() == model[i].cfg().describe());
    }
    CHECK(same_bits(attend_all(loaded[0], 1), attend_all(model[0], 1)));
    CHECK(same_bits(attend_all(loaded[1], 2), attend_all(model[1], 2)));
    check_same_future(model[0], loaded[0], R + 4, 1100);

    // the pointer overload writes the same bytes; a one-layer loader refuses a model file
    const layer_cache* ptrs[] = {&model[0], &model[1], &model[2]};
    CHECK(patternkv::serialize_model(ptrs) == patternkv::serialize_model(model));
    CHECK_THROWS_WITH_AS(patternkv::load_layer(path), doctest::Contains("holds 3 layers"), patternkv::error);
    // a single-layer file is a one-layer model
    patternkv::save_layer(model[1], path);
    CHECK(patternkv::load_model(path).size() == 1);
    CHECK(live_snapshot(patternkv::load_layer(path)) == live_snapshot(model[1]));
    std::filesystem::remove(path);
    CHECK_THROWS_WITH_AS(patternkv::load_layer(path), doctest::Contains("cannot open"), patternkv::error);
    CHECK_THROWS_WITH_AS(patternkv::save_layer(model[0], "/nonexistent-dir/x.pkv"), doctest::Contains("cannot open"), patternkv::error);
    CHECK_THROWS_AS(patternkv::serialize_model(std::span<const layer_cache>{}), patternkv::error);
}

TEST_CASE("files do not depend on the backend: a GPU backend loads and saves the same cache") {
    for (const auto b : {patternkv::backend::cuda, patternkv::backend::hip}) {
        if (!patternkv::backend_available(b)) {
            pkv_test::skip(fmt::format("{} file round trip: {}", patternkv::backend_name(b), patternkv::backend_unavailable_reason(b)));
            continue;
        }
        layer_cache cpu = make_cache(small(patternkv::patternkv_config(2)), ragged, 1200);
        patternkv::load_options on_device;
        on_device.where = b;
        layer_cache dev = patternkv::deserialize_layer(patternkv::serialize_layer(cpu), on_device);
        CHECK(dev.where() == b);
        CHECK(same_bits(attend_all(dev, 9), attend_all(cpu, 9)));
        layer_cache back = patternkv::deserialize_layer(patternkv::serialize_layer(dev));
        CHECK(live_snapshot(back) == live_snapshot(cpu));
    }
}

// A user's own miner and gate given to a cache (user_policies.hpp): they run through prefill,
// flushes and attention on the CPU backend, their results are checked, and a GPU backend refuses them.
// A device-callable gate runs in the GPU backend's own kernels (emulated on the CPU), bit for bit.
#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <optional>
#include <span>
#include <stdexcept>
#include <vector>

#include <doctest/doctest.h>
#include <patternkv/patternkv.hpp>

#include "core/fp16.hpp"
#include "src/layer_cache_state.hpp"
#include "support.hpp"

// The GPU backend's kernels and class compiled for the CPU (backends/gpu/emulation.hpp).
#define PKV_GPU_EMULATION 1
#include "backends/gpu/backend.hpp"

namespace {

constexpr int H = 2, d = 32, Hq = 4, R = 16;

patternkv::config small() {
    patternkv::config c = pkv_test::with_shape(patternkv::patternkv_config(2), H, d, Hq, R);
    c.num_patterns = 4;
    c.k_channel_select = false;  // the K bank is the miner's, column for column
    c.tokens_per_pattern = 0;    // a flush may grow the bank up to its capacity (8)
    return c;
}

/// Mines the prompt's first min(3, tokens) rows as patterns; proposes the window's first row.
struct first_rows_miner {
    int mine(std::span<const float> x, int dd, int, bool, std::span<float> bank) const {
        const int n = std::min<int>(3, static_cast<int>(x.size()) / dd);
        for (int i = 0; i < n * dd; ++i) bank[i] = patternkv::core::round_to_half(x[i]);
        return n;
    }
    bool propose(std::span<const float> w, int dd, std::span<float> c) const {
        for (int j = 0; j < dd; ++j) c[j] = patternkv::core::round_to_half(w[j]);
        return true;
    }
};

/// Residualizes iff the residual's first channel is smaller in magnitude than the raw one's.
struct first_channel_gate {
    bool residualize(std::span<const float> v, std::span<const float> m) const { return std::fabs(v[0] - m[0]) < std::fabs(v[0]); }
};

/// first_channel_gate as a user writes it for a GPU: device-callable (PKV_HD, no host-only calls)
/// and trivially copyable.
struct device_first_channel_gate {
    PKV_HD bool residualize(std::span<const float> v, std::span<const float> m) const {
        const float r = v[0] - m[0];
        return r * r < v[0] * v[0];
    }
};

/// A miner that misbehaves in one of three ways; a bad proposal is the `proposals_left`-th one from
/// now (the other proposals of the same flush succeed and grow their banks).
struct bad_miner {
    enum { too_many, not_finite, bad_proposal } how;
    std::shared_ptr<std::atomic<int>> proposals_left = std::make_shared<std::atomic<int>>(1 << 30);
    int mine(std::span<const float> x, int dd, int, bool, std::span<float> bank) const {
        for (int i = 0; i < 2 * dd; ++i) bank[i] = x[i];
        if (how == not_finite) bank[5] = std::numeric_limits<float>::quiet_NaN();
        return how == too_many ? static_cast<int>(bank.size()) / dd + 1 : 2;
    }
    bool propose(std::span<const float>, int dd, std::span<float> c) const {
        const bool bad = how == bad_proposal && --*proposals_left == 0;
        for (int j = 0; j < dd; ++j) c[j] = bad ? 1e9f : 0.0f;
        return true;
    }
};

struct run {
    std::vector<std::uint8_t> file;
    std::vector<float> out;
};

// Prefill `prompt` tokens, then `steps` appends each followed by an attention; returns the saved
// cache and every attention output.
run drive(patternkv::layer_cache& cache, int prompt, int steps) {
    const auto k = pkv_test::synthetic_kv(71, prompt + steps, H, d, true), v = pkv_test::synthetic_kv(72, prompt + steps, H, d, false);
    const auto q = pkv_test::normal_floats(73, static_cast<std::size_t>(Hq) * d);
    cache.prefill(0, patternkv::view_f32(k.data(), prompt, H, d), patternkv::view_f32(v.data(), prompt, H, d));
    run r;
    std::vector<float> o(q.size());
    for (int t = prompt; t < prompt + steps; ++t) {
        cache.append(patternkv::view_f32(k.data() + static_cast<std::size_t>(t) * H * d, 1, H, d),
                     patternkv::view_f32(v.data() + static_cast<std::size_t>(t) * H * d, 1, H, d));
        cache.attend(patternkv::view_f32(q.data(), 1, Hq, d), patternkv::view_f32(o.data(), 1, Hq, d));
        r.out.insert(r.out.end(), o.begin(), o.end());
    }
    r.file = patternkv::serialize_layer(cache);
    return r;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
    return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

}  // namespace

TEST_CASE("the library's own k-means and gate, given as user policies, give the same bits as the config's") {
    const patternkv::config c = small();
    patternkv::layer_cache plain(c, 1, 400);
    const patternkv::kmeans_miner km{c.num_patterns, c.kmeans_iterations, c.kmeans_tolerance,
                                     c.seed,         c.grow_patterns,     c.tokens_per_pattern};
    patternkv::layer_cache wrapped(c, 1, 400,
                                   {patternkv::any_miner(km), patternkv::any_gate(patternkv::z_test_gate(c.gate_alpha, c.head_dim))});
    const run a = drive(plain, 100, 120), b = drive(wrapped, 100, 120);
    CHECK(same_bits(a.out, b.out));
    CHECK(a.file == b.file);
}

TEST_CASE("a user miner and gate run through prefill, flushes and attention") {
    const patternkv::config c = small();
    patternkv::layer_cache cache(c, 1, 400, {patternkv::any_miner(first_rows_miner{}), patternkv::any_gate(first_channel_gate{})});
    const int prompt = 100, steps = 3 * R + 1;  // three flushes
    const auto k = pkv_test::synthetic_kv(71, prompt, H, d, true);
    const run r = drive(cache, prompt, steps);
    const auto& s = patternkv::state_of(cache);
    for (int h = 0; h < H; ++h) {
        // 3 mined rows (the prompt's first tokens after the sink) + one proposal per flush, up to the bank's capacity
        CHECK(cache.bank_size(0, h, false) == std::min(3 + 3, c.bank_capacity()));
        for (int j = 0; j < d; ++j)
            CHECK(s.k_bank[s.sh(0, h) * s.bank_capacity * d + j] ==
                  patternkv::core::float_to_half(k[(static_cast<std::size_t>(c.sink_tokens) * H + h) * d + j]));
    }
    // the gate decided: attention over the stored cache matches the dequantized cache's
    for (float x : r.out) CHECK(std::isfinite(x));
    const auto q = pkv_test::normal_floats(73, static_cast<std::size_t>(Hq) * d);
    std::vector<float> o(q.size());
    cache.attend(patternkv::view_f32(q.data(), 1, Hq, d), patternkv::view_f32(o.data(), 1, Hq, d));
    CHECK(pkv_test::max_head_relative_error(o.data(), pkv_test::naive_attention(cache, 0, q.data()), Hq, d) <=
          pkv_test::on_codes_tolerance(cache.cfg()));
    // and it differs from the built-in policies' cache
    patternkv::layer_cache builtin(c, 1, 400);
    CHECK_FALSE(same_bits(drive(builtin, prompt, steps).out, r.out));
}

TEST_CASE("a misbehaving user miner is an error that leaves the cache as it was") {
    const patternkv::config c = small();
    const auto k = pkv_test::synthetic_kv(81, 200, H, d, true), v = pkv_test::synthetic_kv(82, 200, H, d, false);
    for (const auto how : {bad_miner::too_many, bad_miner::not_finite}) {
        patternkv::layer_cache cache(c, 1, 400, {patternkv::any_miner(bad_miner{how}), std::nullopt});
        const auto before = patternkv::serialize_layer(cache);
        CHECK_THROWS_WITH_AS(cache.prefill(0, patternkv::view_f32(k.data(), 50, H, d), patternkv::view_f32(v.data(), 50, H, d)),
                             doctest::Contains(how == bad_miner::too_many ? "the miner returned" : "the miner's pattern"),
                             patternkv::error);
        CHECK(cache.size(0) == 0);
        CHECK(patternkv::serialize_layer(cache) == before);
    }
    // a bad proposal at a flush: the append throws and the cache keeps its bytes
    const bad_miner bad{bad_miner::bad_proposal};
    patternkv::layer_cache cache(c, 1, 400, {patternkv::any_miner(bad), std::nullopt});
    cache.prefill(0, patternkv::view_f32(k.data(), 40, H, d), patternkv::view_f32(v.data(), 40, H, d));
    int t = 40;
    for (; cache.size(0) - cache.quantized_size(0) < c.sink_tokens + R; ++t)  // fill the window (after the sink row) up
        cache.append(patternkv::view_f32(k.data() + static_cast<std::size_t>(t) * H * d, 1, H, d),
                     patternkv::view_f32(v.data() + static_cast<std::size_t>(t) * H * d, 1, H, d));
    const auto before = patternkv::serialize_layer(cache);
    *bad.proposals_left = 2 * H;  // the flush's last proposal of its 2 * H (K and V banks of every head)
    CHECK_THROWS_WITH_AS(cache.append(patternkv::view_f32(k.data() + static_cast<std::size_t>(t) * H * d, 1, H, d),
                                      patternkv::view_f32(v.data() + static_cast<std::size_t>(t) * H * d, 1, H, d)),
                         doctest::Contains("proposed pattern"), patternkv::error);
    CHECK(patternkv::serialize_layer(cache) == before);
}

TEST_CASE("user policies: refused on a GPU backend and without patterns") {
    const patternkv::user_policies p{patternkv::any_miner(first_rows_miner{}), std::nullopt};
    for (const auto b : {patternkv::backend::cuda, patternkv::backend::hip})
        CHECK_THROWS_WITH_AS(patternkv::layer_cache(small(), 1, 100, p, b), doctest::Contains("CPU backend only"), patternkv::error);
    patternkv::config none = small();
    none.num_patterns = 0;
    CHECK_THROWS_WITH_AS(patternkv::layer_cache(none, 1, 100, p), doctest::Contains("num_patterns = 0"), patternkv::error);
}

TEST_CASE("a device-callable user gate runs in the GPU backend's kernels through a cache, bit for bit (emulated)") {
    const patternkv::config c = small();
    const patternkv::user_policies user{std::nullopt, patternkv::any_gate(device_first_channel_gate{})};
    patternkv::layer_cache cpu(c, 1, 400, user), gpu(c, 1, 400, user);
    auto& s = const_cast<patternkv::layer_cache_state&>(patternkv::state_of(gpu));
    s.impl = patternkv::emulated::make_gpu_backend_with_gate(s, patternkv::backend::cpu, device_first_channel_gate{});
    const int prompt = 100, steps = 3 * R + 1;  // prefill alignment and three flushes
    const run a = drive(cpu, prompt, steps), b = drive(gpu, prompt, steps);
    CHECK(same_bits(a.out, b.out));
    CHECK(a.file == b.file);  // codes, gate bits, indices, banks and windows
    // the gate decided something: the config's gate stores other bits
    patternkv::layer_cache builtin(c, 1, 400);
    CHECK(drive(builtin, prompt, steps).file != a.file);
}

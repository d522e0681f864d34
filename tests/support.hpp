#pragma once
// Shared helpers of the test suites: seeded synthetic K/V, a double-precision naive attention
// over the cache's own reconstruction, and the location of the real data.
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include <doctest/doctest.h>
#include <fmt/format.h>

#include <patternkv/patternkv.hpp>

namespace pkv_test {

/// Records that the calling test case cannot run here and why (tests/doctest_main.cpp): the
/// executable then exits 77 (Meson's SKIP). The caller returns right after.
void skip(const std::string& why);

/// Synthetic K or V rows [T][H][d]: per head a few centres plus noise, and (for K) two outlier
/// channels, so that pattern alignment has something to find. Deterministic for a seed.
inline std::vector<float> synthetic_kv(std::uint64_t seed, int T, int H, int d, bool keys) {
    std::mt19937_64 gen(seed);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    const int centres = 6;
    std::vector<float> c(static_cast<std::size_t>(H) * centres * d);
    for (auto& x : c) x = normal(gen) * 1.5f;
    std::vector<float> out(static_cast<std::size_t>(T) * H * d);
    for (int t = 0; t < T; ++t)
        for (int h = 0; h < H; ++h) {
            const int k = static_cast<int>(gen() % centres);
            for (int j = 0; j < d; ++j) {
                float x = c[(static_cast<std::size_t>(h) * centres + k) * d + j] + 0.4f * normal(gen);
                if (keys && (j == 1 || j == d / 2)) x = x * 6.0f + 8.0f;
                out[(static_cast<std::size_t>(t) * H + h) * d + j] = x;
            }
        }
    return out;
}

/// `c` reshaped for small tests: kv_heads, head_dim, q_heads and a page (window, K group) of R tokens.
inline patternkv::config with_shape(patternkv::config c, int kv_heads, int head_dim, int q_heads, int R) {
    c.head_dim = head_dim;
    c.num_kv_heads = kv_heads;
    c.num_q_heads = q_heads;
    c.residual_length = c.k_group = R;
    return c;
}

/// Seeded standard-normal floats.
inline std::vector<float> normal_floats(std::uint64_t seed, std::size_t n, float sigma = 1.0f) {
    std::mt19937_64 gen(seed);
    std::normal_distribution<float> normal(0.0f, sigma);
    std::vector<float> v(n);
    for (auto& x : v) x = normal(gen);
    return v;
}

/// Double-precision attention of one sequence over cache.dequantize(): q [Hq][d] -> out [Hq][d].
inline std::vector<double> naive_attention(const patternkv::layer_cache& cache, int seq, const float* q) {
    const patternkv::config& c = cache.cfg();
    const auto T = cache.size(seq);
    const int H = c.num_kv_heads, d = c.head_dim, Hq = c.num_q_heads, G = Hq / H;
    std::vector<float> k(static_cast<std::size_t>(T) * H * d), v(k.size());
    cache.dequantize(seq, patternkv::view_f32(k.data(), T, H, d), patternkv::view_f32(v.data(), T, H, d));
    const double tau = c.scale();
    std::vector<double> out(static_cast<std::size_t>(Hq) * d, 0.0), s(static_cast<std::size_t>(T));
    for (int hq = 0; hq < Hq; ++hq) {
        const int h = hq / G;
        double mx = -INFINITY;
        for (std::int64_t t = 0; t < T; ++t) {
            double acc = 0.0;
            for (int j = 0; j < d; ++j) acc += static_cast<double>(q[hq * d + j]) * tau * k[(t * H + h) * d + j];
            s[t] = acc;
            mx = std::max(mx, acc);
        }
        double l = 0.0;
        for (std::int64_t t = 0; t < T; ++t) l += (s[t] = std::exp(s[t] - mx));
        for (std::int64_t t = 0; t < T; ++t)
            for (int j = 0; j < d; ++j) out[hq * d + j] += s[t] / l * v[(t * H + h) * d + j];
    }
    return out;
}

/// Bound on max_head_relative_error(attend, naive_attention) for a cache of config c. Attention on
/// the codes rounds its multipliers to integers (core/multipliers.hpp), which the dequantized
/// double-precision reference does not: int16 multipliers (K at 4 and 8 bits, all V) stay within
/// 1e-3 on these synthetic inputs (measured <= 2.1e-4), int8 K multipliers at 2 bits within 0.15
/// (measured <= 0.07, at head_dim 8 where a score has 8 rounded terms). Whether the integer
/// sums themselves are right is checked bit for bit elsewhere (test_kernels: SIMD against the
/// scalar definition; the differential tests: GPU against CPU).
inline double on_codes_tolerance(const patternkv::config& c) { return c.k_bits <= 2 ? 0.15 : 1e-3; }

/// ||a - b||_2 / ||b||_2 over one head's d outputs, maximised over heads.
inline double max_head_relative_error(const float* a, const std::vector<double>& b, int heads, int d) {
    double worst = 0.0;
    for (int h = 0; h < heads; ++h) {
        double num = 0.0, den = 0.0;
        for (int j = 0; j < d; ++j) {
            const double diff = a[h * d + j] - b[h * d + j];
            num += diff * diff;
            den += b[h * d + j] * b[h * d + j];
        }
        worst = std::max(worst, std::sqrt(num / std::max(den, 1e-300)));
    }
    return worst;
}

/// Path of a file of ../shared/data: PATTERNKV_DATA_DIR if set (a missing file then fails the
/// test), else <source root>/../shared/data; without the variable and the file the test binary
/// reports the skip loudly and exits 77 (Meson's SKIP).
inline std::string data_file(const std::string& name) {
    namespace fs = std::filesystem;
    if (const char* dir = std::getenv("PATTERNKV_DATA_DIR")) {
        const fs::path p = fs::path(dir) / name;
        if (!fs::exists(p)) FAIL(fmt::format("PATTERNKV_DATA_DIR is set but {} does not exist", p.string()));
        return p.string();
    }
    const char* root = std::getenv("PATTERNKV_SOURCE_ROOT");
    const fs::path p = fs::path(root ? root : ".") / ".." / "shared" / "data" / name;
    if (!fs::exists(p)) {
        fmt::print(stderr, "\n*** SKIPPED: real data {} not found and PATTERNKV_DATA_DIR is unset ***\n\n", p.string());
        std::exit(77);
    }
    return p.string();
}

}  // namespace pkv_test

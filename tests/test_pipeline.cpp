// The encode pipeline's wiring against an independent oracle written here in double precision:
// prefill pages align by squared L2, flush pages by the min-max distance over a bank that already
// holds the flushed window's Chebyshev centre, V's gate is the z-test on the token's own pattern,
// and K is never gated (every K token is stored as a residual of its own pattern).
#include <algorithm>
#include <cmath>
#include <limits>

#include "core/fp16.hpp"
#include "src/layer_cache_state.hpp"
#include "support.hpp"

namespace {

constexpr int H = 2, d = 32, Hq = 4, R = 32, n0 = 4;

patternkv::config paper_config() {
    patternkv::config c = pkv_test::with_shape(patternkv::patternkv_config(2), H, d, Hq, R);
    c.num_patterns = n0;
    c.k_patterns = true;
    c.k_channel_select = false;  // every K channel subtracts its pattern, the bank grows at each flush
    c.tokens_per_pattern = 0;    // n0 patterns from any prompt of more than n0 tokens
    c.sink_tokens = 0;           // token t of the prompt is row t % R of page t / R (test_sink.cpp covers the sink)
    return c;
}

std::vector<double> bank_rows(const patternkv::layer_cache_state& s, bool v, int h, int count) {
    std::vector<double> b(static_cast<std::size_t>(count) * d);
    for (int i = 0; i < count * d; ++i) b[i] = patternkv::core::half_to_float(s.bank(v, 0, h)[i]);
    return b;
}

// the cache's input: fp16-rounded values, in double
double x_at(const std::vector<float>& x, int t, int h, int j) {
    return patternkv::core::half_to_float(patternkv::core::float_to_half(x[(static_cast<std::size_t>(t) * H + h) * d + j]));
}

double l2(const std::vector<float>& x, int t, int h, const std::vector<double>& bank, int c) {
    double s = 0;
    for (int j = 0; j < d; ++j) s += (x_at(x, t, h, j) - bank[c * d + j]) * (x_at(x, t, h, j) - bank[c * d + j]);
    return s;
}

double dmm(const std::vector<float>& x, int t, int h, const std::vector<double>& bank, int c) {
    double lo = std::numeric_limits<double>::infinity(), hi = -lo;
    for (int j = 0; j < d; ++j) {
        lo = std::min(lo, x_at(x, t, h, j) - bank[c * d + j]);
        hi = std::max(hi, x_at(x, t, h, j) - bank[c * d + j]);
    }
    return hi - lo;
}

// The stored index must attain the minimum distance (up to float rounding of the library's sums).
template <class Dist>
void check_nearest(int stored, int count, Dist dist, const char* what) {
    double best = std::numeric_limits<double>::infinity();
    for (int c = 0; c < count; ++c) best = std::min(best, dist(c));
    INFO(what << ": stored index " << stored << " of " << count);
    REQUIRE(stored < count);
    CHECK(dist(stored) <= best * (1 + 1e-5) + 1e-9);
}

}  // namespace

TEST_CASE("prefill aligns by L2, flushes by min-max over a bank holding the new centre, V gates on its own pattern, K never") {
    const patternkv::config c = paper_config();
    patternkv::layer_cache cache(c, 1, 400);
    const int prompt = 100, total = 100 + 3 * R + 4;  // prompt: 3 pages + 4 window tokens; then 3 flushes
    const auto k = pkv_test::synthetic_kv(21, total, H, d, true), v = pkv_test::synthetic_kv(22, total, H, d, false);
    cache.prefill(0, patternkv::view_f32(k.data(), prompt, H, d), patternkv::view_f32(v.data(), prompt, H, d));
    for (int t = prompt; t < total; ++t)
        cache.append(patternkv::view_f32(k.data() + static_cast<std::size_t>(t) * H * d, 1, H, d),
                     patternkv::view_f32(v.data() + static_cast<std::size_t>(t) * H * d, 1, H, d));
    const auto& s = patternkv::state_of(cache);
    const int pages = s.pages[0], prefill_pages = prompt / R;
    REQUIRE(pages == prefill_pages + 3);
    std::vector<float> kh(static_cast<std::size_t>(total) * H * d), vh(kh.size());
    cache.dequantize(0, patternkv::view_f32(kh.data(), total, H, d), patternkv::view_f32(vh.data(), total, H, d));
    const double zc = static_cast<double>(patternkv::z_test_gate(c.gate_alpha, d).c);
    int gate_checked = 0, new_centre_used = 0;
    for (int h = 0; h < H; ++h)
        for (int side = 0; side < 2; ++side) {
            const bool isv = side == 1;
            const std::vector<float>& x = isv ? v : k;
            REQUIRE(cache.bank_size(0, h, isv) == n0 + 3);
            const std::vector<double> bank = bank_rows(s, isv, h, n0 + 3);
            for (int p = 0; p < pages; ++p) {
                const bool flushed = p >= prefill_pages;
                const int count = flushed ? n0 + (p - prefill_pages) + 1 : n0;  // the flush's centre is row count - 1
                const patternkv::core::page_view pv = s.head(0, h).page(p);
                if (flushed) {  // the centre appended at this flush is the window's per-channel midrange
                    for (int j = 0; j < d; ++j) {
                        double lo = x_at(x, p * R, h, j), hi = lo;
                        for (int t = p * R; t < (p + 1) * R; ++t) lo = std::min(lo, x_at(x, t, h, j)), hi = std::max(hi, x_at(x, t, h, j));
                        CHECK(bank[(count - 1) * d + j] ==
                              patternkv::core::half_to_float(patternkv::core::float_to_half(static_cast<float>((lo + hi) / 2))));
                    }
                }
                for (int i = 0; i < R; ++i) {
                    const int t = p * R + i, a = patternkv::core::pattern_index(isv ? pv.v_index : pv.k_index, i, s.geom.index_bits);
                    if (flushed) {
                        check_nearest(
                            a, count, [&](int cc) { return dmm(x, t, h, bank, cc); }, "flush: min-max distance");
                        new_centre_used += a == count - 1;
                    } else {
                        check_nearest(
                            a, count, [&](int cc) { return l2(x, t, h, bank, cc); }, "prefill: squared L2");
                    }
                    const std::vector<float>& xh = isv ? vh : kh;
                    if (!isv) {  // K: always a residual of its own pattern, so the reconstruction is within half a step
                        const int g = i / c.k_group;
                        for (int j = 0; j < d; ++j) {
                            const double step = patternkv::core::half_to_float(pv.k_sm[g * d + j].scale);
                            CHECK(std::abs(xh[(static_cast<std::size_t>(t) * H + h) * d + j] - x_at(x, t, h, j)) <= step / 2 + 1e-3);
                        }
                        continue;
                    }
                    // V: the z-test on the token's own pattern, in double
                    double rlo = 1e300, rhi = -1e300, flo = 1e300, fhi = -1e300;
                    for (int j = 0; j < d; ++j) {
                        const double xv = x_at(x, t, h, j), r = xv - bank[a * d + j];
                        rlo = std::min(rlo, xv), rhi = std::max(rhi, xv), flo = std::min(flo, r), fhi = std::max(fhi, r);
                    }
                    const double rho = std::max(fhi - flo, 1e-12) / std::max(rhi - rlo, 1e-12);
                    const double lhs = 1 - rho * rho, rhs = zc * std::sqrt(1 + rho * rho * rho * rho);
                    if (std::abs(lhs - rhs) < 1e-4) continue;  // too close to the threshold for a double oracle
                    ++gate_checked;
                    CHECK(patternkv::core::gate_bit(pv.v_gate, i) == (lhs >= rhs));
                }
            }
        }
    MESSAGE(gate_checked << " V gate decisions checked; " << new_centre_used << " flushed tokens aligned to their own window's centre");
    CHECK(gate_checked > 300);
    CHECK(new_centre_used > 0);  // the centre was in the bank when the window's tokens were aligned
}

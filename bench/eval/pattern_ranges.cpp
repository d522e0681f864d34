/// @file pattern_ranges.cpp
/// Squared-range ratios of stored residuals against raw K/V (pattern_ranges.hpp), read from the
/// caches' stored pattern indices, gate bits and fp16 banks.

#include "pattern_ranges.hpp"

#include <algorithm>

#include <fmt/format.h>

#include "core/fp16.hpp"
#include "src/layer_cache_state.hpp"

namespace pkveval {
namespace {

/// Summed squared ranges, raw and stored, and how many groups grew.
struct range_sums {
    double raw = 0.0, stored = 0.0;
    long grew = 0, groups = 0;
    void add(float raw_lo, float raw_hi, float lo, float hi) {
        raw += static_cast<double>(raw_hi - raw_lo) * (raw_hi - raw_lo);
        stored += static_cast<double>(hi - lo) * (hi - lo);
        grew += hi - lo > raw_hi - raw_lo;
        ++groups;
    }
    std::string cell() const { return raw > 0 ? fmt::format("{:6.3f} ({:4.1f}%)", stored / raw, 100.0 * grew / groups) : "     -"; }
};

struct layer_ranges {
    range_sums k_fast, k_slow, k_all, v;
    double k_err = 0.0, k_norm = 0.0, v_err = 0.0, v_norm = 0.0;      ///< squared errors of the dequantized history
    double k0_err = 0.0, k0_norm = 0.0, v0_err = 0.0, v0_norm = 0.0;  ///< the same for token 0 alone (the attention sink)
};

/// Squared error and squared norm of the dequantized quantized history (window excluded).
void add_errors(const patternkv::layer_cache& cache, const float* k, const float* v, layer_ranges& out) {
    const std::int64_t T = cache.size(0), Q = cache.quantized_size(0);
    const int H = cache.cfg().num_kv_heads, d = cache.cfg().head_dim;
    std::vector<float> kh(static_cast<std::size_t>(T) * H * d), vh(kh.size());
    cache.dequantize(0, patternkv::view_f32(kh.data(), T, H, d), patternkv::view_f32(vh.data(), T, H, d));
    for (std::size_t i = 0; i < static_cast<std::size_t>(std::min<std::int64_t>(Q, 1)) * H * d; ++i) {
        out.k0_err += static_cast<double>(kh[i] - k[i]) * (kh[i] - k[i]);
        out.k0_norm += static_cast<double>(k[i]) * k[i];
        out.v0_err += static_cast<double>(vh[i] - v[i]) * (vh[i] - v[i]);
        out.v0_norm += static_cast<double>(v[i]) * v[i];
    }
    for (std::size_t i = 0; i < static_cast<std::size_t>(Q) * H * d; ++i) {
        out.k_err += static_cast<double>(kh[i] - k[i]) * (kh[i] - k[i]);
        out.k_norm += static_cast<double>(k[i]) * k[i];
        out.v_err += static_cast<double>(vh[i] - v[i]) * (vh[i] - v[i]);
        out.v_norm += static_cast<double>(v[i]) * v[i];
    }
}

/// The RoPE pair of channel j; pair i turns at base^(-2i/d), so low pairs are the fast ones.
int rope_pair_of(int j, const model_config& mc) { return mc.rope == rope_pairs::halves ? j % (mc.head_dim / 2) : j / 2; }

layer_ranges measure_layer(const patternkv::layer_cache& cache, const float* k, const float* v, const model_config& mc) {
    const patternkv::layer_cache_state& s = patternkv::state_of(cache);
    const int d = mc.head_dim, H = mc.n_kv_heads, R = s.geom.tokens, pages = s.pages[0];
    const int kg = s.cfg.k_group, vg = s.cfg.v_group_size();
    layer_ranges out;
    add_errors(cache, k, v, out);
    if (s.cfg.num_patterns == 0) return out;
    std::vector<float> bank;
    auto x_at = [&](const float* x, int t, int h, int j) { return x[(static_cast<std::size_t>(t) * H + h) * d + j]; };
    for (int h = 0; h < H; ++h) {
        for (int isv = 0; isv < 2; ++isv) {
            const int nb = cache.bank_size(0, h, isv == 1);
            bank.resize(static_cast<std::size_t>(nb) * d);
            for (std::size_t i = 0; i < bank.size(); ++i) bank[i] = patternkv::core::half_to_float(s.bank(isv == 1, 0, h)[i]);
            const patternkv::core::head_pages hp = s.head(0, h);
            for (int p = 0; p < pages; ++p) {
                const patternkv::core::page_view pv = hp.page(p);
                auto stored = [&](const float* x, int t, int j) {
                    const int a = patternkv::core::pattern_index(isv ? pv.v_index : pv.k_index, t - p * R, s.geom.index_bits);
                    const bool sub = nb > 0 && (!isv || patternkv::core::gate_bit(pv.v_gate, t - p * R));
                    return x_at(x, t, h, j) - (sub ? bank[static_cast<std::size_t>(a) * d + j] : 0.0f);
                };
                if (!isv) {
                    for (int j = 0; j < d; ++j)
                        for (int t0 = p * R; t0 < (p + 1) * R; t0 += kg) {
                            float rl = x_at(k, t0, h, j), rh = rl, lo = stored(k, t0, j), hi = lo;
                            for (int t = t0 + 1; t < t0 + kg; ++t) {
                                rl = std::min(rl, x_at(k, t, h, j)), rh = std::max(rh, x_at(k, t, h, j));
                                lo = std::min(lo, stored(k, t, j)), hi = std::max(hi, stored(k, t, j));
                            }
                            (rope_pair_of(j, mc) < d / 4 ? out.k_fast : out.k_slow).add(rl, rh, lo, hi);
                            out.k_all.add(rl, rh, lo, hi);
                        }
                } else {
                    for (int t = p * R; t < (p + 1) * R; ++t)
                        for (int j0 = 0; j0 < d; j0 += vg) {
                            float rl = x_at(v, t, h, j0), rh = rl, lo = stored(v, t, j0), hi = lo;
                            for (int j = j0 + 1; j < j0 + vg; ++j) {
                                rl = std::min(rl, x_at(v, t, h, j)), rh = std::max(rh, x_at(v, t, h, j));
                                lo = std::min(lo, stored(v, t, j)), hi = std::max(hi, stored(v, t, j));
                            }
                            out.v.add(rl, rh, lo, hi);
                        }
                }
            }
        }
    }
    return out;
}

void merge(range_sums& a, const range_sums& b) { a.raw += b.raw, a.stored += b.stored, a.grew += b.grew, a.groups += b.groups; }

void merge(layer_ranges& a, const layer_ranges& b) {
    merge(a.k_fast, b.k_fast), merge(a.k_slow, b.k_slow), merge(a.k_all, b.k_all), merge(a.v, b.v);
    a.k_err += b.k_err, a.k_norm += b.k_norm, a.v_err += b.v_err, a.v_norm += b.v_norm;
    a.k0_err += b.k0_err, a.k0_norm += b.k0_norm, a.v0_err += b.v0_err, a.v0_norm += b.v0_norm;
}

std::string row(const std::string& name, const layer_ranges& r) {
    return fmt::format("{:>5}  {:>16}  {:>16}  {:>16}  {:>16}  {:>9.5f}  {:>9.5f}  {:>9.5f}  {:>9.5f}\n", name, r.k_fast.cell(),
                       r.k_slow.cell(), r.k_all.cell(), r.v.cell(), r.k_err / r.k_norm, r.v_err / r.v_norm, r.k0_err / r.k0_norm,
                       r.v0_err / r.v0_norm);
}

}  // namespace

std::string format_range_report(const std::vector<method_cache>& methods, const transformer::prefill_result& pre, const model_config& mc,
                                int chunk) {
    std::string s;
    for (const auto& m : methods) {
        if (m.spec().exact) continue;
        s += fmt::format(
            "pattern range report, chunk {}, {}: squared-range ratio stored/raw (share of groups whose range grew); "
            "relative squared error of the dequantized history\n",
            chunk, m.spec().name);
        s += fmt::format("{:>5}  {:>16}  {:>16}  {:>16}  {:>16}  {:>9}  {:>9}  {:>9}  {:>9}\n", "layer", "K fast channels",
                         "K slow channels", "K all", "V", "K relMSE", "V relMSE", "K0 relMSE", "V0 relMSE");
        layer_ranges total;
        for (int l = 0; l < mc.n_layers; ++l) {
            if (m.library_cache(l) == nullptr) continue;  // a sliding-window layer, kept exact
            const layer_ranges r = measure_layer(*m.library_cache(l), pre.k[l].data(), pre.v[l].data(), mc);
            s += row(std::to_string(l), r);
            merge(total, r);
        }
        s += row("all", total);
    }
    return s;
}

}  // namespace pkveval

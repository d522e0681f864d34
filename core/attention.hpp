#pragma once
// Decode attention directly on codes (method.md section 7), in one fixed order shared by every
// backend:
//   * history is cut into splits of pages_per_split(R) pages; the window is one more split, last;
//   * per split: scores, split max m (a zero max is +0), e_t = exp(s_t - m), l = sum e_t in lane
//     order (reduce.hpp), partial output o (below) + per-group sum_t e_t mnc_t (lane order within a
//     page, pages in order), and a per-pattern histogram of e_t over gated V tokens (token order);
//   * combine in split order with alpha_s = exp(m_s - M); then add sum_c H_c m_c (pattern order,
//     zero entries skipped) and divide by L.
// The per-element work is integer (multipliers.hpp): a code c of b bits is used centred,
// 2 c - (2^b - 1), and its multiplier is rounded to an integer (int8 or int16: multiplier_max) with
// one float step per (group, query head):
//   per-channel K, per K group:  s_t = step/2 * sum_j m_j (2 c_tj - (2^b - 1))
//                                      + q . (mn + centre * scale) + q . m_{a(t)},  m_j ~ q_j s_j / step
//   V, per page and V group:     o_j += step/2 * sum_t m_t (2 c_tj - (2^b - 1)),     m_t ~ e_t s_t / step
// The integer sums are exact, so SIMD, GPU threads and the scalar loops below may add their terms
// in any order; everything in floating point is per token, group or page and has one fixed order.
//
// The functions are templates on `Ops`, the primitives (integer code sums, fp16 conversion, the
// fixed-order float steps). scalar_ops is the definition; a backend may pass a faster Ops computing
// the same bits (reference/simd/ has the AVX2 and AVX-512 ones, checked by tests/test_kernels.cpp). A group of
// query heads sharing one KV head is processed together so codes are read once; every head's
// result is the same as when processed alone.

#include <concepts>
#include <cstdint>

#include "exp.hpp"
#include "fp16.hpp"
#include "multipliers.hpp"
#include "page_layout.hpp"
#include "platform.hpp"
#include "reduce.hpp"

namespace patternkv::core {

/// Record of one split for one query head: [m, l, o[d], hist[bank_capacity]].
PKV_HD constexpr int partial_stride(int d, int bank_capacity) { return 2 + d + bank_capacity; }

/// The element-wise primitives of attention, as defined.
struct scalar_ops {
    /// out[i] = half_to_float(x[i]).
    PKV_HD static void halves(const std::uint16_t* x, int n, float* out) {
        for (int i = 0; i < n; ++i) out[i] = half_to_float(x[i]);
    }
    /// y[i] = fma(a, x[i], y[i]).
    PKV_HD static void fma_accumulate(float a, const float* x, float* y, int n) {
        for (int i = 0; i < n; ++i) y[i] = fma_exact(a, x[i], y[i]);
    }
    /// For each head h and position p < n: out[h * out_stride + p] = float(sum over rows r < rows of
    /// m[h * m_stride + r] * (2 code(row r, first + p) - (2^bits - 1))): integer multipliers
    /// (multipliers.hpp, integer-valued floats) times centred codes, summed in int32 (the multiplier
    /// bounds keep every sum inside int32). Row r starts at codes + r * row_words. The sum is exact,
    /// so any order gives the same bits (K: rows are channels, positions tokens; V: rows are tokens,
    /// positions channels). multiplier_max: the bound |m| <= multiplier_max the caller used.
    PKV_HD static void code_sums(const std::uint32_t* codes, int row_words, int rows, int bits, int first, int n, const float* m,
                                 int m_stride, int heads, int multiplier_max, float* out, int out_stride) {
        (void)multiplier_max;
        const auto off = static_cast<std::int32_t>(code_mask(bits));
        for (int h = 0; h < heads; ++h)
            for (int p = 0; p < n; ++p) {
                std::int32_t sum = 0;
                for (int r = 0; r < rows; ++r)
                    sum += static_cast<std::int32_t>(m[h * m_stride + r]) *
                           (2 * static_cast<std::int32_t>(unpack_code(codes + r * row_words, first + p, bits)) - off);
                out[h * out_stride + p] = static_cast<float>(sum);
            }
    }
    /// Per-token K scores without the pattern term, for `heads` query heads: for head h and token
    /// t < tokens (row t at codes + t * row_words, its group pairs at sm + t * groups, groups =
    /// d / group), scores[h * score_stride + t] = the sum over channel groups gi, in order, of
    /// scale * (half_steps[h] * code) + mnc * qsum, where code is the group's integer sum of
    /// m[h * d + j] * (2 code(t, j) - (2^bits - 1)) (integer multipliers, exact), qsum the group's
    /// sum of q[h * d + j] (group_sums) and mnc = min + centre * scale.
    PKV_HD static void token_scores(const std::uint32_t* codes, int row_words, const scale_min* sm, int tokens, int bits, int d, int group,
                                    const float* q, const float* m, int heads, const float* half_steps, float* scores, int score_stride) {
        const int groups = d / group;
        const auto off = static_cast<std::int32_t>(code_mask(bits));
        const float centre = 0.5f * static_cast<float>(code_mask(bits));
        for (int h = 0; h < heads; ++h) {
            float qsum[max_head_dim];
            group_sums(q + h * d, d, group, qsum);
            for (int t = 0; t < tokens; ++t) {
                const std::uint32_t* row = codes + t * row_words;
                float total = 0.0f;
                for (int gi = 0; gi < groups; ++gi) {
                    std::int32_t code = 0;  // the group's centred code sum (exact: multiplier_max keeps it in int32)
                    for (int j = gi * group; j < (gi + 1) * group; ++j)
                        code += static_cast<std::int32_t>(m[h * d + j]) * (2 * static_cast<std::int32_t>(unpack_code(row, j, bits)) - off);
                    total = token_group_term(total, sm[t * groups + gi], centre, half_steps[h], code, qsum[gi]);
                }
                scores[h * score_stride + t] = total;
            }
        }
    }
    /// qsum[gi] = the sum of q over channel group gi (`group` channels), in channel order.
    PKV_HD static void group_sums(const float* q, int d, int group, float* qsum) {
        for (int gi = 0; gi < d / group; ++gi) {
            qsum[gi] = 0.0f;
            for (int j = gi * group; j < (gi + 1) * group; ++j) qsum[gi] = qsum[gi] + q[j];
        }
    }
    /// One channel group's term of a per-token K score added to total (token_scores' float order).
    PKV_HD static float token_group_term(float total, scale_min sm, float centre, float half_step, std::int32_t code, float qsum) {
        const float scale = half_to_float(sm.scale), mnc = half_to_float(sm.min) + centre * scale;
        return total + (scale * (half_step * static_cast<float>(code)) + mnc * qsum);
    }
    /// For i < n, the fp16 (scale, min) pair at sm + 2 * stride * i: scale[i] = scale and
    /// mnc[i] = min + centre * scale (the minimum of the centred codes).
    PKV_HD static void scales_and_minimums(const std::uint16_t* sm, int n, int stride, float centre, float* scale, float* mnc) {
        for (int i = 0; i < n; ++i) {
            scale[i] = half_to_float(sm[2 * stride * i]);
            mnc[i] = half_to_float(sm[2 * stride * i + 1]) + centre * scale[i];
        }
    }
    /// out[i] = a[i] * b[i].
    PKV_HD static void multiply(const float* a, const float* b, int n, float* out) {
        for (int i = 0; i < n; ++i) out[i] = a[i] * b[i];
    }
    /// quantize_multipliers(a, n, qmax) (multipliers.hpp).
    PKV_HD static float quantize(float* a, int n, int qmax) { return quantize_multipliers(a, n, qmax); }
    /// o[i] = o[i] + half_step * sums[i] (V outputs).
    PKV_HD static void add_code_terms(float* o, const float* sums, int n, float half_step) {
        for (int i = 0; i < n; ++i) o[i] = o[i] + half_step * sums[i];
    }
    /// s[i] = (half_step * s[i] + z) + table[index[i]] (K scores from centred sums: code term,
    /// zero-point term, pattern term; no pattern term when table is nullptr). Every index is below
    /// table_size, the entries table may be read at.
    PKV_HD static void finish_scores(float* s, int n, float half_step, float z, const float* table, int table_size,
                                     const std::uint8_t* index) {
        (void)table_size;
        for (int i = 0; i < n; ++i) {
            s[i] = half_step * s[i] + z;
            if (table != nullptr) s[i] = s[i] + table[index[i]];
        }
    }
    /// pattern_indices(idx, first, n, bits, buf) (page_layout.hpp): indices first .. first + n - 1,
    /// one byte each.
    PKV_HD static const std::uint8_t* indices(const std::uint8_t* idx, int first, int n, int bits, std::uint8_t* buf) {
        return pattern_indices(idx, first, n, bits, buf);
    }
    /// y[i] = y[i] + a * x[i] (mul then add, never fused).
    PKV_HD static void add_scaled(float a, const float* x, float* y, int n) {
        for (int i = 0; i < n; ++i) y[i] = y[i] + a * x[i];
    }
    /// s[i] = s[i] + table[index[i]] (the pattern term of the scores).
    PKV_HD static void add_gathered(float* s, const float* table, const std::uint8_t* index, int n) {
        for (int i = 0; i < n; ++i) s[i] = s[i] + table[index[i]];
    }
    /// s[i] = exp(s[i] - m); returns lane_sum(s, n).
    PKV_HD static float exponentiate(float* s, int n, float m) {
        for (int i = 0; i < n; ++i) s[i] = exp_fixed(s[i] - m);
        return lane_sum(s, n);
    }
    /// lane_dot(a, b, n).
    PKV_HD static float dot(const float* a, const float* b, int n) { return lane_dot(a, b, n); }
    /// dot(a, halves(h)) and add_scaled(a, halves(h), y) with each half converted where it is used:
    /// the same bits without a [max_head_dim] buffer (2 KB of stack per GPU thread).
    PKV_HD static float dot_halves(const float* a, const std::uint16_t* h, int n) {
        return lane_dot_of(
            a, [h](int j) { return half_to_float(h[j]); }, n);
    }
    PKV_HD static void add_scaled_halves(float a, const std::uint16_t* h, float* y, int n) {
        for (int i = 0; i < n; ++i) y[i] = y[i] + a * half_to_float(h[i]);
    }
    /// max_i s[i] (n >= 1, no NaN), with a zero maximum returned as +0 so the order of the search
    /// cannot show through the sign of zero.
    PKV_HD static float max(const float* s, int n) {
        float m = s[0];
        for (int i = 1; i < n; ++i) m = s[i] > m ? s[i] : m;
        return m + 0.0f;
    }
};

/// What a set of attention primitives provides: scalar_ops above is the definition, and a set for
/// another ISA or device (reference/simd/, the GPU kernels) must give the same bits, which
/// tests/test_kernels.cpp checks twin by twin. This is where attention on codes is open: to new
/// kernels of the same arithmetic, not to a new storage format (docs/embedding.md). A set may also
/// provide quantize_products (multiply then quantize in one pass); the functions below use it when
/// present.
template <class O>
concept AttentionOps = requires(const std::uint16_t* h16, const std::uint32_t* codes, const scale_min* sm, const float* x, float* y,
                                const std::uint8_t* index, std::uint8_t* buf, int n, float a) {
    O::halves(h16, n, y);
    O::fma_accumulate(a, x, y, n);
    O::code_sums(codes, n, n, n, n, n, x, n, n, n, y, n);
    O::token_scores(codes, n, sm, n, n, n, n, x, x, n, x, y, n);
    O::scales_and_minimums(h16, n, n, a, y, y);
    O::multiply(x, x, n, y);
    { O::quantize(y, n, n) } -> std::same_as<float>;
    O::add_code_terms(y, x, n, a);
    O::finish_scores(y, n, a, a, x, n, index);
    { O::indices(index, n, n, n, buf) } -> std::same_as<const std::uint8_t*>;
    O::add_scaled(a, x, y, n);
    O::add_gathered(y, x, index, n);
    { O::exponentiate(y, n, a) } -> std::same_as<float>;
    { O::dot(x, x, n) } -> std::same_as<float>;
    { O::max(x, n) } -> std::same_as<float>;
};
static_assert(AttentionOps<scalar_ops>);

/// Scratch floats attend_history_split needs for `heads` query heads: scores [heads][count * R],
/// zero sums [heads][d], then the larger of page_scores' work (multipliers [heads][d], a K group's
/// scales and centred minimums [2 d], steps [heads]) and page_accumulate_v's (multipliers
/// [heads][R], one V group's scales and centred minimums [2 R], sums [heads][v_group], steps
/// [heads]). v_groups: V groups per token (d / v_group; default: the bound 1, i.e. v_group d).
PKV_HD constexpr int split_scratch_floats(int heads, int split_tokens, int d, int page_tokens, int v_groups = 1) {
    const int k_work = heads * d + 2 * d + heads;
    const int v_work = heads * page_tokens + 2 * page_tokens + heads * (d / v_groups) + heads;
    return heads * split_tokens + heads * d + (k_work > v_work ? k_work : v_work);
}

/// Where the per-head inputs and outputs of a head group live.
struct head_group {
    int heads;           ///< query heads in the group (the GQA ratio, or fewer)
    const float* q_tau;  ///< scaled queries [heads][d]
    const float* qm;     ///< q_tau . K patterns [heads][qm_stride], or nullptr without patterns
    int qm_stride;
    float* recs;  ///< partial records, head h at recs + h * rec_stride
    int rec_stride;
};

/// Half of (2^bits - 1): the centre of a code's range, exact in float.
PKV_HD constexpr float code_centre(int bits) { return 0.5f * static_cast<float>(code_mask(bits)); }

/// For each head h < heads: m[h * n + i] = x[h * x_stride + i] * y[i], rounded to integers of at
/// most qmax (multipliers.hpp); half_steps[h] = half of its step (the centred codes count twice).
/// An Ops may fuse this (Ops::quantize_products, the same bits); else it is multiply then quantize.
template <AttentionOps Ops>
PKV_HD void quantize_products(const float* x, int x_stride, const float* y, int n, int heads, int qmax, float* m, float* half_steps) {
    if constexpr (requires { Ops::quantize_products(x, x_stride, y, n, heads, qmax, m, half_steps); }) {
        Ops::quantize_products(x, x_stride, y, n, heads, qmax, m, half_steps);
    } else {
        for (int h = 0; h < heads; ++h) {
            Ops::multiply(x + h * x_stride, y, n, m + h * n);
            half_steps[h] = 0.5f * Ops::quantize(m + h * n, n, qmax);
        }
    }
}

/// Scores of the R tokens of one page for every head of a group: scores + h * score_stride.
/// Per-channel K, per K group: the multipliers q_j s_j become integers (one step per head), the
/// code term is their integer sum with the centred codes, and the centre moves into the zero-point
/// term q . (mn + centre * s). work: heads * d + 2 * d + heads floats.
template <AttentionOps Ops>
PKV_HD void page_scores(const page_geometry& g, const page_view& p, const head_group& hg, float* scores, int score_stride, float* work) {
    const int d = g.d;
    if (g.k_per_channel) {
        float* m = work;                     // [heads][d]
        float* scale = work + hg.heads * d;  // [d]: the group's scale per channel
        float* mnc = scale + d;              // [d]: centred minimums
        float* steps = mnc + d;              // [heads]: half steps
        const float centre = code_centre(g.k_bits);
        const int qmax = multiplier_max(false, d, g.k_bits);
        for (int t0 = 0; t0 < g.tokens; t0 += g.k_group) {
            Ops::scales_and_minimums(reinterpret_cast<const std::uint16_t*>(p.k_sm + (t0 / g.k_group) * d), d, 1, centre, scale, mnc);
            quantize_products<Ops>(hg.q_tau, d, scale, d, hg.heads, qmax, m, steps);
            Ops::code_sums(p.k_codes, g.k_row_words(), d, g.k_bits, t0, g.k_group, m, d, hg.heads, qmax, scores + t0, score_stride);
            std::uint8_t buf[max_page_tokens];  // the group's pattern indices, one byte each, for every head
            const std::uint8_t* idx =
                hg.qm != nullptr && g.k_patterns ? Ops::indices(p.k_index, t0, g.k_group, g.index_bits, buf) : nullptr;
            for (int h = 0; h < hg.heads; ++h)
                Ops::finish_scores(scores + h * score_stride + t0, g.k_group, steps[h], Ops::dot(hg.q_tau + h * d, mnc, d),
                                   idx != nullptr ? hg.qm + h * hg.qm_stride : nullptr, hg.qm_stride, idx);
        }
    } else {
        // Per-token K (the KIVI per-token baseline): the query is rounded once per page, the code
        // term of each (token, channel group) is an integer dot product, groups add in order.
        float* m = work;                     // [heads][d]
        float* steps = work + hg.heads * d;  // [heads]: half steps
        std::uint8_t buf[max_page_tokens];
        const std::uint8_t* idx = hg.qm != nullptr && g.k_patterns ? Ops::indices(p.k_index, 0, g.tokens, g.index_bits, buf) : nullptr;
        for (int h = 0; h < hg.heads; ++h) {
            for (int j = 0; j < d; ++j) m[h * d + j] = hg.q_tau[h * d + j];
            steps[h] = 0.5f * Ops::quantize(m + h * d, d, multiplier_max(false, d, g.k_bits));
        }
        Ops::token_scores(p.k_codes, g.k_row_words(), p.k_sm, g.tokens, g.k_bits, d, g.k_group, hg.q_tau, m, hg.heads, steps, scores,
                          score_stride);
        if (idx != nullptr)
            for (int h = 0; h < hg.heads; ++h) Ops::add_gathered(scores + h * score_stride, hg.qm + h * hg.qm_stride, idx, g.tokens);
    }
}

/// Adds one page's V contribution for every head of a group, with weights e + h * e_stride [R]:
/// per V group, the multipliers e_t s_t become integers (one step per head) and o[j] += the code
/// term of their integer sum with the centred codes; zsum[group] += sum_t e_t (mn_t + centre s_t)
/// (lane order over the page); hist[a(t)] += e_t for gated tokens (token order; when the group has
/// patterns). o, zsum, hist of head h: rec + 2, zsum + h * groups, rec + 2 + d. w: heads * R +
/// 2 * R + heads * v_group + heads floats of scratch.
template <AttentionOps Ops>
PKV_HD void page_accumulate_v(const page_geometry& g, const page_view& p, const head_group& hg, const float* e, int e_stride, float* zsum,
                              float* w) {
    const int groups = g.d / g.v_group, R = g.tokens, vg = g.v_group;
    float* scale = w + hg.heads * R;      // [R]: one group's scales
    float* mnc = scale + R;               // [R]: one group's centred minimums
    float* sums = mnc + R;                // [heads][v_group]: one group's integer sums
    float* steps = sums + hg.heads * vg;  // [heads]: half steps
    const float centre = code_centre(g.v_bits);
    const int qmax = multiplier_max(true, R, g.v_bits);
    for (int gi = 0; gi < groups; ++gi) {
        Ops::scales_and_minimums(reinterpret_cast<const std::uint16_t*>(p.v_sm + gi), R, groups, centre, scale, mnc);
        for (int h = 0; h < hg.heads; ++h) zsum[h * groups + gi] = zsum[h * groups + gi] + Ops::dot(e + h * e_stride, mnc, R);
        quantize_products<Ops>(e, e_stride, scale, R, hg.heads, qmax, w, steps);
        Ops::code_sums(p.v_codes, g.v_row_words(), R, g.v_bits, gi * vg, vg, w, R, hg.heads, qmax, sums, vg);
        for (int h = 0; h < hg.heads; ++h) Ops::add_code_terms(hg.recs + h * hg.rec_stride + 2 + gi * vg, sums + h * vg, vg, steps[h]);
    }
    if (hg.qm == nullptr) return;
    for (int w = 0; w < g.gate_words(); ++w) {  // gated tokens in order, from the set bits (no branch per token)
        const int in_word = R - 32 * w;         // tokens of the page in this word (bits past R are ignored)
        for (std::uint32_t bits = p.v_gate[w] & (in_word >= 32 ? ~0u : (1u << in_word) - 1u); bits != 0; bits &= bits - 1) {
            const int t = 32 * w + lowest_bit(bits), a = pattern_index(p.v_index, t, g.index_bits);
            for (int h = 0; h < hg.heads; ++h) {
                float* hist = hg.recs + h * hg.rec_stride + 2 + g.d;
                hist[a] = hist[a] + e[h * e_stride + t];
            }
        }
    }
}

/// One history split [first, first + count) pages for a group of query heads. hist_entries:
/// histogram entries of each record to clear, at least the V bank size in use (entries past it are
/// never read; the bank capacity is always safe). work: split_scratch_floats(heads, count * R, d, R).
template <AttentionOps Ops>
PKV_HD void attend_history_split(const head_pages& hp, int first, int count, const head_group& hg, int hist_entries, float* work) {
    const page_geometry& g = hp.g;
    const int n = count * g.tokens, groups = g.d / g.v_group;
    float* scores = work;                      // [heads][n]
    float* zsum = work + hg.heads * n;         // [heads][groups]
    float* page_work = zsum + hg.heads * g.d;  // page_scores' work, then page_accumulate_v's weights
    for (int h = 0; h < hg.heads; ++h) {
        float* rec = hg.recs + h * hg.rec_stride;
        for (int j = 0; j < g.d + hist_entries; ++j) rec[2 + j] = 0.0f;
        for (int gi = 0; gi < groups; ++gi) zsum[h * groups + gi] = 0.0f;
    }
    for (int i = 0; i < count; ++i) page_scores<Ops>(g, hp.page(first + i), hg, scores + i * g.tokens, n, page_work);
    for (int h = 0; h < hg.heads; ++h) {
        float* rec = hg.recs + h * hg.rec_stride;
        rec[0] = Ops::max(scores + h * n, n);
        rec[1] = Ops::exponentiate(scores + h * n, n, rec[0]);
    }
    for (int i = 0; i < count; ++i) page_accumulate_v<Ops>(g, hp.page(first + i), hg, scores + i * g.tokens, n, zsum, page_work);
    for (int h = 0; h < hg.heads; ++h) {
        float* o = hg.recs + h * hg.rec_stride + 2;
        for (int gi = 0; gi < groups; ++gi)
            for (int j = gi * g.v_group; j < (gi + 1) * g.v_group; ++j) o[j] = o[j] + zsum[h * groups + gi];
    }
}

/// The window split for a group of heads: n >= 1 fp16 tokens wk, wv [n][d]; hist_entries as for
/// attend_history_split. work: heads * n + d floats.
template <AttentionOps Ops>
PKV_HD void attend_window_split(const std::uint16_t* wk, const std::uint16_t* wv, int n, int d, const head_group& hg, int hist_entries,
                                float* work) {
    float* scores = work;              // [heads][n]
    float* row = work + hg.heads * n;  // [d]
    for (int t = 0; t < n; ++t) {
        Ops::halves(wk + t * d, d, row);
        for (int h = 0; h < hg.heads; ++h) scores[h * n + t] = Ops::dot(hg.q_tau + h * d, row, d);
    }
    for (int h = 0; h < hg.heads; ++h) {
        float* rec = hg.recs + h * hg.rec_stride;
        for (int j = 0; j < d + hist_entries; ++j) rec[2 + j] = 0.0f;
        rec[0] = Ops::max(scores + h * n, n);
        rec[1] = Ops::exponentiate(scores + h * n, n, rec[0]);
    }
    for (int t = 0; t < n; ++t) {
        Ops::halves(wv + t * d, d, row);
        for (int h = 0; h < hg.heads; ++h) Ops::fma_accumulate(scores[h * n + t], row, hg.recs + h * hg.rec_stride + 2, d);
    }
}

/// q_tau . m_c for the first `bank` patterns of an fp16 bank [bank][d] (canonical order), for
/// `heads` queries q_tau + h * d into qm + h * qm_stride.
template <AttentionOps Ops = scalar_ops>
PKV_HD void pattern_scores(const float* q_tau, const std::uint16_t* bank_k, int bank, int d, float* qm, int heads = 1, int qm_stride = 0) {
    for (int c = 0; c < bank; ++c) {
        if constexpr (requires { Ops::dot_halves(q_tau, bank_k, d); }) {
            for (int h = 0; h < heads; ++h) qm[h * qm_stride + c] = Ops::dot_halves(q_tau + h * d, bank_k + c * d, d);
        } else {
            float m[max_head_dim];
            Ops::halves(bank_k + c * d, d, m);
            for (int h = 0; h < heads; ++h) qm[h * qm_stride + c] = Ops::dot(q_tau + h * d, m, d);
        }
    }
}

/// Combines `splits` partial records (in order) into the output [d]. bank_v: fp16 V patterns
/// [bank][d], bank = patterns in use (<= bank_capacity); hist_acc: scratch [bank].
template <AttentionOps Ops = scalar_ops>
PKV_HD void combine_splits(const float* recs, int splits, int d, int bank_capacity, const std::uint16_t* bank_v, int bank, float* hist_acc,
                           float* out) {
    const int stride = partial_stride(d, bank_capacity);
    float big_m = recs[0];
    for (int s = 1; s < splits; ++s) big_m = recs[s * stride] > big_m ? recs[s * stride] : big_m;
    float big_l = 0.0f;
    for (int j = 0; j < d; ++j) out[j] = 0.0f;
    for (int c = 0; c < bank; ++c) hist_acc[c] = 0.0f;
    for (int s = 0; s < splits; ++s) {
        const float* r = recs + s * stride;
        const float alpha = exp_fixed(r[0] - big_m);
        big_l = big_l + alpha * r[1];
        Ops::add_scaled(alpha, r + 2, out, d);
        Ops::add_scaled(alpha, r + 2 + d, hist_acc, bank);
    }
    for (int c = 0; c < bank; ++c) {
        if (hist_acc[c] == 0.0f) continue;
        if constexpr (requires { Ops::add_scaled_halves(hist_acc[c], bank_v, out, d); }) {
            Ops::add_scaled_halves(hist_acc[c], bank_v + c * d, out, d);
        } else {
            float m[max_head_dim];
            Ops::halves(bank_v + c * d, d, m);
            Ops::add_scaled(hist_acc[c], m, out, d);
        }
    }
    for (int j = 0; j < d; ++j) out[j] = out[j] / big_l;
}

}  // namespace patternkv::core

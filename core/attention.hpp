#pragma once
// Decode attention directly on codes (method.md section 7), in one fixed order shared by every
// backend:
//   * history is cut into splits of pages_per_split(R) pages; the window is one more split, last;
//   * per split: scores, split max m, e_t = exp(s_t - m), l = sum e_t in token order, partial output
//     o = sum_t (e_t s_t) code_t (token order) + per-group sum e_t mn_t, and a per-pattern histogram
//     of e_t over gated V tokens;
//   * combine in split order with alpha_s = exp(m_s - M); then add sum_c H_c m_c (pattern order,
//     zero entries skipped) and divide by L.
// Scores: per-channel K  s_t = (sum_j (q_j s_j) code_tj  [j in order]) + q.mn_group + q.m_{a(t)}.
// The code sums over j (scores) and over t (outputs) are fused multiply-adds (fma_exact), in the
// order written: every element's sequence of operations is fixed, so SIMD over tokens (scores) or
// channels (outputs), GPU threads and the scalar loops below all give the same bits.
//
// The functions are templates on `Ops`, the element-wise primitives (unpack codes to floats,
// y = fma(a, x, y), exponentiate). scalar_ops is the definition; a backend may pass a faster Ops
// computing the same bits (reference/simd/ has the AVX2 one, checked by tests/test_kernels.cpp).
// A group of query heads sharing one KV head is processed together so codes are unpacked once.

#include <cstdint>

#include "exp.hpp"
#include "fp16.hpp"
#include "page_layout.hpp"
#include "platform.hpp"
#include "reduce.hpp"

namespace patternkv::core {

/// Record of one split for one query head: [m, l, o[d], hist[bank_capacity]].
PKV_HD constexpr int partial_stride(int d, int bank_capacity) { return 2 + d + bank_capacity; }

/// The element-wise primitives of attention, as defined.
struct scalar_ops {
    /// out[i] = code first + i of a packed row, as a float.
    PKV_HD static void unpack(const std::uint32_t* row, int first, int n, int bits, float* out) {
        for (int i = 0; i < n; ++i) out[i] = static_cast<float>(unpack_code(row, first + i, bits));
    }
    /// out[i] = half_to_float(x[i]).
    PKV_HD static void halves(const std::uint16_t* x, int n, float* out) {
        for (int i = 0; i < n; ++i) out[i] = half_to_float(x[i]);
    }
    /// y[i] = fma(a, x[i], y[i]).
    PKV_HD static void fma_accumulate(float a, const float* x, float* y, int n) {
        for (int i = 0; i < n; ++i) y[i] = fma_exact(a, x[i], y[i]);
    }
    /// s[i] = exp(s[i] - m); returns the sum in index order.
    PKV_HD static float exponentiate(float* s, int n, float m) {
        float l = 0.0f;
        for (int i = 0; i < n; ++i) {
            s[i] = exp_fixed(s[i] - m);
            l = l + s[i];
        }
        return l;
    }
};

/// Scratch floats attend_history_split needs for `heads` query heads: scores [heads][count * R],
/// zero sums [heads][d], then page_scores' work (query scales [heads][d], minimums [heads][d],
/// one unpacked row of max(R, d)).
PKV_HD constexpr int split_scratch_floats(int heads, int split_tokens, int d, int page_tokens) {
    return heads * split_tokens + 3 * heads * d + (page_tokens > d ? page_tokens : d);
}

/// Where the per-head inputs and outputs of a head group live.
struct head_group {
    int heads;              ///< query heads in the group (the GQA ratio, or fewer)
    const float* q_tau;     ///< scaled queries [heads][d]
    const float* qm;        ///< q_tau . K patterns [heads][qm_stride], or nullptr without patterns
    int qm_stride;
    float* recs;            ///< partial records, head h at recs + h * rec_stride
    int rec_stride;
};

/// Scores of the R tokens of one page for every head of a group: scores + h * score_stride.
/// work: 2 * heads * d + max(R, d) floats.
template <class Ops>
PKV_HD void page_scores(const page_geometry& g, const page_view& p, const head_group& hg, float* scores, int score_stride,
                        float* work) {
    const int d = g.d;
    if (g.k_per_channel) {
        float* qs = work;                      // [heads][d]
        float* mn = work + hg.heads * d;       // [d]
        float* row = work + 2 * hg.heads * d;  // one channel's codes over the group's tokens
        const int wpr = g.k_row_words();
        for (int t0 = 0; t0 < g.tokens; t0 += g.k_group) {
            const scale_min* sm = p.k_sm + (t0 / g.k_group) * d;
            for (int j = 0; j < d; ++j) mn[j] = half_to_float(sm[j].min);
            for (int h = 0; h < hg.heads; ++h) {
                const float* q = hg.q_tau + h * d;
                for (int j = 0; j < d; ++j) qs[h * d + j] = q[j] * half_to_float(sm[j].scale);
                for (int t = 0; t < g.k_group; ++t) scores[h * score_stride + t0 + t] = 0.0f;
            }
            for (int j = 0; j < d; ++j) {
                Ops::unpack(p.k_codes + j * wpr, t0, g.k_group, g.k_bits, row);
                for (int h = 0; h < hg.heads; ++h) Ops::fma_accumulate(qs[h * d + j], row, scores + h * score_stride + t0, g.k_group);
            }
            for (int h = 0; h < hg.heads; ++h) {
                const float zero_term = lane_dot(hg.q_tau + h * d, mn, d);
                for (int t = 0; t < g.k_group; ++t) scores[h * score_stride + t0 + t] = scores[h * score_stride + t0 + t] + zero_term;
            }
        }
    } else {
        const int groups = d / g.k_group;
        for (int h = 0; h < hg.heads; ++h) {
            const float* q = hg.q_tau + h * d;
            for (int t = 0; t < g.tokens; ++t) {
                const std::uint32_t* row = p.k_codes + t * g.k_row_words();
                const scale_min* sm = p.k_sm + t * groups;
                float total = 0.0f;
                for (int gi = 0; gi < groups; ++gi) {
                    float dot = 0.0f, qsum = 0.0f;
                    for (int j = gi * g.k_group; j < (gi + 1) * g.k_group; ++j) {
                        dot = fma_exact(q[j], static_cast<float>(unpack_code(row, j, g.k_bits)), dot);
                        qsum = qsum + q[j];
                    }
                    total = total + (half_to_float(sm[gi].scale) * dot + half_to_float(sm[gi].min) * qsum);
                }
                scores[h * score_stride + t] = total;
            }
        }
    }
    if (hg.qm != nullptr)
        for (int h = 0; h < hg.heads; ++h)
            for (int t = 0; t < g.tokens; ++t)
                scores[h * score_stride + t] = scores[h * score_stride + t] + hg.qm[h * hg.qm_stride + p.k_index[t]];
}

/// max of n scores (order-free).
PKV_HD float max_score(const float* s, int n) {
    float m = s[0];
    for (int i = 1; i < n; ++i) m = s[i] > m ? s[i] : m;
    return m;
}

/// Adds one page's V contribution for every head of a group, with weights e + h * e_stride [R]:
/// o[j] += (e_t s_t) code_tj (token order), zsum[group] += e_t mn_t, hist[a(t)] += e_t for gated
/// tokens (when the group has patterns). o, zsum, hist of head h: rec + 2, zsum + h * groups,
/// rec + 2 + d. row: d floats of scratch.
template <class Ops>
PKV_HD void page_accumulate_v(const page_geometry& g, const page_view& p, const head_group& hg, const float* e, int e_stride,
                              float* zsum, float* row) {
    const int groups = g.d / g.v_group;
    for (int t = 0; t < g.tokens; ++t) {
        Ops::unpack(p.v_codes + t * g.v_row_words(), 0, g.d, g.v_bits, row);
        const scale_min* sm = p.v_sm + t * groups;
        const bool gated = hg.qm != nullptr && gate_bit(p.v_gate, t);
        for (int h = 0; h < hg.heads; ++h) {
            const float et = e[h * e_stride + t];
            float* rec = hg.recs + h * hg.rec_stride;
            for (int gi = 0; gi < groups; ++gi) {
                zsum[h * groups + gi] = zsum[h * groups + gi] + et * half_to_float(sm[gi].min);
                Ops::fma_accumulate(et * half_to_float(sm[gi].scale), row + gi * g.v_group, rec + 2 + gi * g.v_group, g.v_group);
            }
            if (gated) rec[2 + g.d + p.v_index[t]] = rec[2 + g.d + p.v_index[t]] + et;
        }
    }
}

/// One history split [first, first + count) pages for a group of query heads.
/// work: split_scratch_floats(heads, count * R, d, R) floats.
template <class Ops>
PKV_HD void attend_history_split(const head_pages& hp, int first, int count, const head_group& hg, int bank_capacity,
                                 float* work) {
    const page_geometry& g = hp.g;
    const int n = count * g.tokens, groups = g.d / g.v_group;
    float* scores = work;                        // [heads][n]
    float* zsum = work + hg.heads * n;           // [heads][groups]
    float* page_work = zsum + hg.heads * g.d;    // page_scores' work; its first d floats are page_accumulate_v's row
    for (int h = 0; h < hg.heads; ++h) {
        float* rec = hg.recs + h * hg.rec_stride;
        for (int j = 0; j < g.d + bank_capacity; ++j) rec[2 + j] = 0.0f;
        for (int gi = 0; gi < groups; ++gi) zsum[h * groups + gi] = 0.0f;
    }
    for (int i = 0; i < count; ++i) page_scores<Ops>(g, hp.page(first + i), hg, scores + i * g.tokens, n, page_work);
    for (int h = 0; h < hg.heads; ++h) {
        float* rec = hg.recs + h * hg.rec_stride;
        rec[0] = max_score(scores + h * n, n);
        rec[1] = Ops::exponentiate(scores + h * n, n, rec[0]);
    }
    for (int i = 0; i < count; ++i)
        page_accumulate_v<Ops>(g, hp.page(first + i), hg, scores + i * g.tokens, n, zsum, page_work);
    for (int h = 0; h < hg.heads; ++h) {
        float* o = hg.recs + h * hg.rec_stride + 2;
        for (int j = 0; j < g.d; ++j) o[j] = o[j] + zsum[h * groups + j / g.v_group];
    }
}

/// The window split for a group of heads: n >= 1 fp16 tokens wk, wv [n][d].
/// work: heads * n + d floats.
template <class Ops>
PKV_HD void attend_window_split(const std::uint16_t* wk, const std::uint16_t* wv, int n, int d, const head_group& hg,
                                int bank_capacity, float* work) {
    float* scores = work;            // [heads][n]
    float* row = work + hg.heads * n;  // [d]
    for (int t = 0; t < n; ++t) {
        Ops::halves(wk + t * d, d, row);
        for (int h = 0; h < hg.heads; ++h) scores[h * n + t] = lane_dot(hg.q_tau + h * d, row, d);
    }
    for (int h = 0; h < hg.heads; ++h) {
        float* rec = hg.recs + h * hg.rec_stride;
        for (int j = 0; j < d + bank_capacity; ++j) rec[2 + j] = 0.0f;
        rec[0] = max_score(scores + h * n, n);
        rec[1] = Ops::exponentiate(scores + h * n, n, rec[0]);
    }
    for (int t = 0; t < n; ++t) {
        Ops::halves(wv + t * d, d, row);
        for (int h = 0; h < hg.heads; ++h) Ops::fma_accumulate(scores[h * n + t], row, hg.recs + h * hg.rec_stride + 2, d);
    }
}

/// q_tau . m_c for the first `bank` patterns of an fp16 bank [bank][d] (canonical order).
PKV_HD void pattern_scores(const float* q_tau, const std::uint16_t* bank_k, int bank, int d, float* qm) {
    for (int c = 0; c < bank; ++c) {
        float m[max_head_dim];
        for (int j = 0; j < d; ++j) m[j] = half_to_float(bank_k[c * d + j]);
        qm[c] = lane_dot(q_tau, m, d);
    }
}

/// Combines `splits` partial records (in order) into the output [d]. bank_v: fp16 V patterns
/// [bank][d], bank = patterns in use (<= bank_capacity); hist_acc: scratch [bank].
PKV_HD void combine_splits(const float* recs, int splits, int d, int bank_capacity, const std::uint16_t* bank_v, int bank,
                           float* hist_acc, float* out) {
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
        for (int j = 0; j < d; ++j) out[j] = out[j] + alpha * r[2 + j];
        for (int c = 0; c < bank; ++c) hist_acc[c] = hist_acc[c] + alpha * r[2 + d + c];
    }
    for (int c = 0; c < bank; ++c) {
        if (hist_acc[c] == 0.0f) continue;
        for (int j = 0; j < d; ++j) out[j] = out[j] + hist_acc[c] * half_to_float(bank_v[c * d + j]);
    }
    for (int j = 0; j < d; ++j) out[j] = out[j] / big_l;
}

} // namespace patternkv::core

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

#include <cstdint>

#include "exp.hpp"
#include "fp16.hpp"
#include "page_layout.hpp"
#include "platform.hpp"
#include "reduce.hpp"

namespace patternkv::core {

/// Record of one split for one query head: [m, l, o[d], hist[bank_capacity]].
PKV_HD constexpr int partial_stride(int d, int bank_capacity) { return 2 + d + bank_capacity; }

/// Scores of the R tokens of one page for one query head. q_tau: scaled query [d];
/// qm: q_tau . K-pattern table, or nullptr without patterns.
PKV_HD void page_scores(const page_geometry& g, const page_view& p, const float* q_tau, const float* qm, float* scores) {
    const int d = g.d;
    if (g.k_per_channel) {
        const int wpr = g.k_row_words();
        for (int t0 = 0; t0 < g.tokens; t0 += g.k_group) {
            const scale_min* sm = p.k_sm + (t0 / g.k_group) * d;
            float qs[max_head_dim], mn[max_head_dim];
            for (int j = 0; j < d; ++j) {
                qs[j] = q_tau[j] * half_to_float(sm[j].scale);
                mn[j] = half_to_float(sm[j].min);
            }
            const float zero_term = lane_dot(q_tau, mn, d);
            float* acc = scores + t0;
            for (int t = 0; t < g.k_group; ++t) acc[t] = 0.0f;
            for (int j = 0; j < d; ++j) {
                const std::uint32_t* row = p.k_codes + j * wpr;
                for (int t = 0; t < g.k_group; ++t)
                    acc[t] = acc[t] + qs[j] * static_cast<float>(unpack_code(row, t0 + t, g.k_bits));
            }
            for (int t = 0; t < g.k_group; ++t) acc[t] = acc[t] + zero_term;
        }
    } else {
        const int groups = d / g.k_group;
        for (int t = 0; t < g.tokens; ++t) {
            const std::uint32_t* row = p.k_codes + t * g.k_row_words();
            const scale_min* sm = p.k_sm + t * groups;
            float total = 0.0f;
            for (int gi = 0; gi < groups; ++gi) {
                float dot = 0.0f, qsum = 0.0f;
                for (int j = gi * g.k_group; j < (gi + 1) * g.k_group; ++j) {
                    dot = dot + q_tau[j] * static_cast<float>(unpack_code(row, j, g.k_bits));
                    qsum = qsum + q_tau[j];
                }
                total = total + (half_to_float(sm[gi].scale) * dot + half_to_float(sm[gi].min) * qsum);
            }
            scores[t] = total;
        }
    }
    if (qm != nullptr)
        for (int t = 0; t < g.tokens; ++t) scores[t] = scores[t] + qm[p.k_index[t]];
}

/// max of n scores (order-free).
PKV_HD float max_score(const float* s, int n) {
    float m = s[0];
    for (int i = 1; i < n; ++i) m = s[i] > m ? s[i] : m;
    return m;
}

/// e_i = exp(s_i - m) in place; returns sum e_i in index order.
PKV_HD float exponentiate_scores(float* s, int n, float m) {
    float l = 0.0f;
    for (int i = 0; i < n; ++i) {
        s[i] = exp_fixed(s[i] - m);
        l = l + s[i];
    }
    return l;
}

/// Adds one page's V contribution with weights e [R]: o[j] += (e_t s_t) code_tj, zsum[group] += e_t mn_t,
/// hist[a(t)] += e_t for gated tokens (hist may be nullptr without patterns).
PKV_HD void page_accumulate_v(const page_geometry& g, const page_view& p, const float* e, float* o, float* zsum, float* hist) {
    const int groups = g.d / g.v_group;
    for (int t = 0; t < g.tokens; ++t) {
        const std::uint32_t* row = p.v_codes + t * g.v_row_words();
        const scale_min* sm = p.v_sm + t * groups;
        for (int gi = 0; gi < groups; ++gi) {
            const float w = e[t] * half_to_float(sm[gi].scale);
            zsum[gi] = zsum[gi] + e[t] * half_to_float(sm[gi].min);
            for (int j = gi * g.v_group; j < (gi + 1) * g.v_group; ++j)
                o[j] = o[j] + w * static_cast<float>(unpack_code(row, j, g.v_bits));
        }
        if (hist != nullptr && gate_bit(p.v_gate, t)) hist[p.v_index[t]] = hist[p.v_index[t]] + e[t];
    }
}

/// One history split [first, first + count) pages for one query head. rec: partial record
/// (partial_stride); scores: scratch of count * R floats; zsum: scratch of d / v_group floats.
PKV_HD void attend_history_split(const head_pages& hp, int first, int count, const float* q_tau, const float* qm,
                                 int bank_capacity, float* scores, float* zsum, float* rec) {
    const page_geometry& g = hp.g;
    float* o = rec + 2;
    float* hist = qm != nullptr ? rec + 2 + g.d : nullptr;
    for (int j = 0; j < g.d; ++j) o[j] = 0.0f;
    for (int c = 0; c < bank_capacity; ++c) rec[2 + g.d + c] = 0.0f;
    for (int gi = 0; gi < g.d / g.v_group; ++gi) zsum[gi] = 0.0f;
    for (int i = 0; i < count; ++i) page_scores(g, hp.page(first + i), q_tau, qm, scores + i * g.tokens);
    const int n = count * g.tokens;
    const float m = max_score(scores, n);
    const float l = exponentiate_scores(scores, n, m);
    for (int i = 0; i < count; ++i) page_accumulate_v(g, hp.page(first + i), scores + i * g.tokens, o, zsum, hist);
    for (int j = 0; j < g.d; ++j) o[j] = o[j] + zsum[j / g.v_group];
    rec[0] = m;
    rec[1] = l;
}

/// The window split: n >= 1 fp16 tokens wk, wv [n][d]. scores: scratch of n floats.
PKV_HD void attend_window_split(const std::uint16_t* wk, const std::uint16_t* wv, int n, int d, const float* q_tau,
                                int bank_capacity, float* scores, float* rec) {
    float* o = rec + 2;
    for (int j = 0; j < d; ++j) o[j] = 0.0f;
    for (int c = 0; c < bank_capacity; ++c) rec[2 + d + c] = 0.0f;
    for (int t = 0; t < n; ++t) {
        float k[max_head_dim];
        for (int j = 0; j < d; ++j) k[j] = half_to_float(wk[t * d + j]);
        scores[t] = lane_dot(q_tau, k, d);
    }
    const float m = max_score(scores, n);
    const float l = exponentiate_scores(scores, n, m);
    for (int t = 0; t < n; ++t)
        for (int j = 0; j < d; ++j) o[j] = o[j] + scores[t] * half_to_float(wv[t * d + j]);
    rec[0] = m;
    rec[1] = l;
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

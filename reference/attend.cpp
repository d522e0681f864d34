// Decode attention of layer_cache on the CPU: oneTBB over (sequence, KV head, split), each task
// running core/attention.hpp for the query heads of its KV group; splits combined in core order.
#include <fmt/format.h>
#include <tbb/parallel_for.h>

#include <patternkv/error.hpp>
#include <patternkv/layer_cache.hpp>

#include "core/attention.hpp"
#include "input_reader.hpp"
#include "layer_cache_state.hpp"

namespace patternkv {
namespace {

int history_splits(const layer_cache_state& s, int seq) {
    const int pps = core::pages_per_split(s.geom.tokens);
    return (s.pages[seq] + pps - 1) / pps;
}

int total_splits(const layer_cache_state& s, int seq) { return history_splits(s, seq) + (s.window_count[seq] > 0 ? 1 : 0); }

void check_attend_args(const layer_cache_state& s, std::span<const int> seqs, const const_tensor_view& q, const tensor_view& out) {
    const auto n = static_cast<std::int64_t>(seqs.size());
    detail::check_shape("attend q", q, n, s.cfg.num_q_heads, s.d());
    detail::check_shape("attend out", out, n, s.cfg.num_q_heads, s.d());
    if (out.type != dtype::f32) throw error(fmt::format("attend out: dtype {} unsupported, out must be f32", dtype_name(out.type)));
    for (std::int64_t i = 0; i < n; ++i) {
        const int seq = seqs[i];
        if (seq < 0 || seq >= s.batch) throw error(fmt::format("attend: sequence index {} out of range [0, {})", seq, s.batch));
        for (std::int64_t j = 0; j < i; ++j)
            if (seqs[j] == seq) throw error(fmt::format("attend: sequence {} listed twice", seq));
        if (s.tokens(seq) == 0) throw error(fmt::format("attend: sequence {} holds no tokens (query for an empty cache)", seq));
    }
}

} // namespace

void layer_cache::attend(std::span<const int> seqs, const_tensor_view q, tensor_view out) const {
    const layer_cache_state& s = *state_;
    check_attend_args(s, seqs, q, out);
    detail::to_finite_floats("attend q", q, s.q_in);

    const int n = static_cast<int>(seqs.size()), d = s.d(), H = s.heads(), G = s.gqa(), Hq = s.cfg.num_q_heads;
    const int cap = s.bank_capacity, stride = core::partial_stride(d, cap), ms = s.max_splits();
    const int pps = core::pages_per_split(s.geom.tokens);
    const float tau = s.cfg.scale();
    const auto qh_index = [&](int i, int hq) { return static_cast<std::size_t>(i) * Hq + hq; };

    // 1. scaled queries and the q . K-pattern tables (unused table entries are 0: pages encoded
    //    before any pattern existed carry index 0 and add nothing).
    tbb::parallel_for(0, n * Hq, [&](int task) {
        const int i = task / Hq, hq = task % Hq, seq = seqs[i];
        const float* qi = s.q_in.data() + qh_index(i, hq) * d;
        float* qt = s.q_tau.data() + qh_index(i, hq) * d;
        for (int j = 0; j < d; ++j) qt[j] = qi[j] * tau;
        if (!s.has_patterns()) return;
        float* qm = s.qm.data() + qh_index(i, hq) * cap;
        const int nb = s.k_bank_size[s.sh(seq, hq / G)];
        core::pattern_scores(qt, s.bank(false, seq, hq / G), nb, d, qm);
        for (int c = nb; c < cap; ++c) qm[c] = 0.0f;
    });

    // 2. one task per (sequence, KV head, split); the KV head's query heads share its codes.
    tbb::parallel_for(0, n * H * ms, [&](int task) {
        const int i = task / (H * ms), h = task / ms % H, split = task % ms, seq = seqs[i];
        if (split >= total_splits(s, seq)) return;
        const bool window = split == history_splits(s, seq);
        const int scratch_tokens = pps * s.geom.tokens;
        std::vector<float>& buf = s.scratch(static_cast<std::size_t>(scratch_tokens + d));
        const core::head_pages hp = s.head(seq, h);
        for (int hq = h * G; hq < (h + 1) * G; ++hq) {
            const float* qt = s.q_tau.data() + qh_index(i, hq) * d;
            float* rec = s.partials.data() + (qh_index(i, hq) * ms + split) * stride;
            if (window) {
                core::attend_window_split(s.window(false, seq, h), s.window(true, seq, h), s.window_count[seq], d, qt, cap,
                                          buf.data(), rec);
            } else {
                const int first = split * pps, count = std::min(pps, s.pages[seq] - first);
                const float* qm = s.has_patterns() ? s.qm.data() + qh_index(i, hq) * cap : nullptr;
                core::attend_history_split(hp, first, count, qt, qm, cap, buf.data(), buf.data() + scratch_tokens, rec);
            }
        }
    });

    // 3. combine the splits of each (sequence, query head) in order.
    tbb::parallel_for(0, n * Hq, [&](int task) {
        const int i = task / Hq, hq = task % Hq, seq = seqs[i];
        std::vector<float>& buf = s.scratch(static_cast<std::size_t>(cap + d));
        const int nb = s.has_patterns() ? s.v_bank_size[s.sh(seq, hq / G)] : 0;
        float* o = buf.data() + cap;
        core::combine_splits(s.partials.data() + qh_index(i, hq) * ms * stride, total_splits(s, seq), d, cap,
                             s.bank(true, seq, hq / G), nb, buf.data(), o);
        float* dst = static_cast<float*>(out.data);
        for (int j = 0; j < d; ++j) dst[out.offset(i, hq, j)] = o[j];
    });
}

void layer_cache::attend(const_tensor_view q, tensor_view out) const { attend(state_->all_seqs, q, out); }

} // namespace patternkv

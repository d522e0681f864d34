// The CPU reference backend: oneTBB over (sequence, KV head[, split]) running core/ templates.
// Prefill mines banks (k-means) and quantizes whole pages; a flush adds the Chebyshev centre and
// quantizes the window; attention runs on codes, one task per (sequence, KV head, split), its
// query heads sharing the KV head's codes, splits combined in core order.
#include <algorithm>
#include <cmath>

#include <fmt/format.h>
#include <tbb/parallel_for.h>

#include <patternkv/error.hpp>

#include "src/cache_backend.hpp"
#include "core/attention.hpp"
#include "core/encode_row.hpp"
#include "core/fp16.hpp"
#include "core/k_channel_select.hpp"
#include "core/patterns.hpp"
#include "src/layer_cache_state.hpp"
#include "simd/attention_ops_amx.hpp"
#include "simd/cpu_features.hpp"

namespace patternkv {
namespace {

void set_gate_bit(std::uint32_t* gate, int t, bool on) {
    const std::uint32_t bit = 1u << (t & 31);
    gate[t >> 5] = on ? (gate[t >> 5] | bit) : (gate[t >> 5] & ~bit);
}

// Patterns from a miner must be finite and within the input bound (so residuals stay in fp16's
// range, docs/configuration.md); a user's miner is checked like the library's own.
void check_patterns(const char* what, const float* x, std::size_t n) {
    for (std::size_t i = 0; i < n; ++i)
        if (!(std::fabs(x[i]) <= core::max_abs_input))
            throw error(fmt::format("{}: value {} at element {} is not finite or exceeds {}", what, x[i], i, core::max_abs_input));
}

// fp16 rows to floats with the shared primitive (F16C when the CPU has it; exact either way).
void half_rows_to_float(const std::uint16_t* x, std::size_t n, float* out) {
    for (std::size_t i = 0; i < n; i += std::size_t{1} << 24) {  // chunks keep the primitive's int count in range
        const int m = static_cast<int>(std::min(n - i, std::size_t{1} << 24));
#if defined(__x86_64__)
        if (simd::have_avx2()) {
            simd::avx2_ops::halves(x + i, m, out + i);
            continue;
        }
#endif
        core::scalar_ops::halves(x + i, m, out + i);
    }
}

// Quantizes `count` whole pages of fp16 rows x [count * R][d] of (seq, h) into pages
// [first, first + count): K (v = false) or V (v = true). Aligns by L2 (prefill) or d_mm (flush).
void encode_pages(layer_cache_state& s, bool v, int seq, int h, const std::uint16_t* x, int first, int count, bool flush) {
    const int d = s.d(), R = s.geom.tokens;
    const int nb = v ? s.v_bank_size[s.sh(seq, h)] : s.k_bank_size[s.sh(seq, h)];
    float* rows = s.scratch();
    float* resid = rows + R * d;
    float* bank = resid + R * d;
    half_rows_to_float(s.bank(v, seq, h), static_cast<std::size_t>(nb) * d, bank);
    for (int p = 0; p < count; ++p) {
        half_rows_to_float(x + static_cast<std::size_t>(p) * R * d, static_cast<std::size_t>(R) * d, rows);
        const core::page_ref page = s.page_mut(seq, h, first + p);
        // the policies of the cache's config, as encode_row's alignment and gate
        const auto align = [&](const float* x, const float* b, int n) {
            const auto by = [&](const auto& q) {
                const std::span<const float> xs(x, d), bs(b, static_cast<std::size_t>(n) * d);
                return flush ? q.align_flush(xs, bs, n) : q.align_prefill(xs, bs, n);
            };
            return v ? by(s.v_quantizer) : std::visit(by, s.k_quantizer);
        };
        const auto gate = [&](const float* x, const float* m) {
            return std::visit(
                [&](const auto& g) {
                    return g.residualize({x, static_cast<std::size_t>(d)}, {m, static_cast<std::size_t>(d)});
                },
                s.gate);
        };
        for (int t = 0; t < R; ++t) {
            const core::row_choice c = core::encode_row(rows + t * d, bank, nb, d, v, align, gate, resid + t * d);
            if (!s.side_has_patterns(v)) continue;
            core::set_pattern_index(v ? page.v_index : page.k_index, t, s.geom.index_bits, c.index);
            if (v) set_gate_bit(page.v_gate, t, c.residual);
        }
        const std::span<const float> rs(resid, static_cast<std::size_t>(R) * d);
        auto* sm = reinterpret_cast<std::uint16_t*>(v ? page.v_sm : page.k_sm);
        if (v) {
            s.v_quantizer.quantize(rs, {page.v_codes, static_cast<std::size_t>(s.geom.v_code_words())},
                                   {sm, 2 * static_cast<std::size_t>(s.geom.v_groups())});
        } else {
            std::visit(
                [&](const auto& q) {
                    q.quantize(rs, {page.k_codes, static_cast<std::size_t>(s.geom.k_code_words())},
                               {sm, 2 * static_cast<std::size_t>(s.geom.k_groups())});
                },
                s.k_quantizer);
        }
    }
}

// Zeroes the K bank columns whose patterns would make the prompt's quantization errors vary more
// from token to token (core/k_channel_select.hpp). bank: `count` fp16-exact rows [count][d].
void select_k_channels(const layer_cache_state& s, const float* rows, int T, float* bank, int count) {
    const int d = s.d(), group = s.cfg.k_group, groups = core::k_select_groups(T, s.geom.tokens, group);
    std::vector<int> assign(T);
    for (int t = 0; t < T; ++t) assign[t] = core::nearest_pattern_l2(rows + static_cast<std::size_t>(t) * d, bank, count, d);
    std::vector<float> col(group);
    std::vector<std::uint8_t> codes(group);
    for (int j = 0; j < d; ++j)
        if (!core::keep_k_pattern_channel(rows, d, bank, assign.data(), groups, group, s.cfg.k_bits, j, col.data(), codes.data()))
            for (int c = 0; c < count; ++c) bank[c * d + j] = 0.0f;
}

// Mines the bank of (seq, h) for K or V from T fp16 rows.
void mine_bank(layer_cache_state& s, bool v, int seq, int h, const std::uint16_t* x, int T) {
    const int d = s.d();
    std::vector<float> rows(static_cast<std::size_t>(T) * d), bank(static_cast<std::size_t>(s.bank_capacity) * d);
    half_rows_to_float(x, rows.size(), rows.data());
    const int n = std::visit([&](const auto& m) { return m.mine(rows, d, h, v, bank); }, s.miner);
    if (n < 0 || n > std::min(T, s.bank_capacity))
        throw error(
            fmt::format("prefill: the miner returned {} patterns for {} tokens (must be in [0, {}])", n, T, std::min(T, s.bank_capacity)));
    check_patterns("prefill: the miner's pattern", bank.data(), static_cast<std::size_t>(n) * d);
    std::uint16_t* dst = s.bank(v, seq, h);
    if (!v && s.selects_k_channels()) select_k_channels(s, rows.data(), T, bank.data(), n);
    for (std::size_t i = 0; i < static_cast<std::size_t>(n) * d; ++i) dst[i] = core::float_to_half(bank[i]);
    (v ? s.v_bank_size : s.k_bank_size)[s.sh(seq, h)] = n;
}

// Flush of one (seq, head) for K or V: Chebyshev centre into the bank, then the window (the rows
// after the sink) becomes a page.
void flush_head(layer_cache_state& s, bool v, int seq, int h, bool may_grow) {
    const int d = s.d(), R = s.geom.tokens;
    const std::uint16_t* w = s.window(v, seq, h) + static_cast<std::size_t>(s.geom.sink) * d;
    if (int& nb = (v ? s.v_bank_size : s.k_bank_size)[s.sh(seq, h)]; may_grow) {
        float* buf = s.scratch();
        half_rows_to_float(w, static_cast<std::size_t>(R) * d, buf);
        float* centre = buf + R * d;
        const bool add = std::visit(
            [&](const auto& m) {
                return m.propose({buf, static_cast<std::size_t>(R) * d}, d, {centre, static_cast<std::size_t>(d)});
            },
            s.miner);
        if (add) {
            check_patterns("append: the miner's proposed pattern", centre, static_cast<std::size_t>(d));
            std::uint16_t* dst = s.bank(v, seq, h) + static_cast<std::size_t>(nb) * d;
            for (int j = 0; j < d; ++j) dst[j] = core::float_to_half(centre[j]);
            ++nb;
        }
    }
    encode_pages(s, v, seq, h, w, s.pages[seq], 1, true);
}

int history_splits(const layer_cache_state& s, int seq) { return core::history_splits(s.pages[seq], s.geom.tokens); }

int total_splits(const layer_cache_state& s, int seq) { return core::attention_splits(s.pages[seq], s.window_count[seq], s.geom.tokens); }

// The split kernels with the fastest primitives this CPU has (identical bits either way).
void run_history_split(const core::head_pages& hp, int first, int count, const core::head_group& hg, int cap, float* work) {
#if defined(__x86_64__)
    if (simd::have_amx()) return core::attend_history_split<simd::amx_ops>(hp, first, count, hg, cap, work);
    if (simd::have_avx512()) return core::attend_history_split<simd::avx512_ops>(hp, first, count, hg, cap, work);
    if (simd::have_avx2()) return core::attend_history_split<simd::avx2_ops>(hp, first, count, hg, cap, work);
#endif
    core::attend_history_split<core::scalar_ops>(hp, first, count, hg, cap, work);
}

void run_pattern_scores(const float* q_tau, const std::uint16_t* bank, int nb, int d, float* qm, int heads, int stride) {
#if defined(__x86_64__)
    if (simd::have_avx2()) return core::pattern_scores<simd::avx2_ops>(q_tau, bank, nb, d, qm, heads, stride);
#endif
    core::pattern_scores<core::scalar_ops>(q_tau, bank, nb, d, qm, heads, stride);
}

void run_combine(const float* recs, int splits, int d, int cap, const std::uint16_t* bank_v, int bank, float* hist, float* out) {
#if defined(__x86_64__)
    if (simd::have_avx2()) return core::combine_splits<simd::avx2_ops>(recs, splits, d, cap, bank_v, bank, hist, out);
#endif
    core::combine_splits<core::scalar_ops>(recs, splits, d, cap, bank_v, bank, hist, out);
}

void run_window_split(const std::uint16_t* wk, const std::uint16_t* wv, int n, int d, const core::head_group& hg, int cap, float* work) {
#if defined(__x86_64__)
    if (simd::have_avx512()) return core::attend_window_split<simd::avx512_ops>(wk, wv, n, d, hg, cap, work);
    if (simd::have_avx2()) return core::attend_window_split<simd::avx2_ops>(wk, wv, n, d, hg, cap, work);
#endif
    core::attend_window_split<core::scalar_ops>(wk, wv, n, d, hg, cap, work);
}

class cpu_backend final : public cache_backend {
public:
    backend kind() const override { return backend::cpu; }

    // The sink rows are copied as they are; banks are mined from the tokens after them.
    void prefill(layer_cache_state& s, int seq, const std::uint16_t* xk, const std::uint16_t* xv, int T) override {
        const int R = s.geom.tokens, full = static_cast<int>(s.geom.prompt_pages(T)), sink = static_cast<int>(s.geom.sink_rows(T));
        const std::size_t d = static_cast<std::size_t>(s.d());
        tbb::parallel_for(0, 2 * s.heads(), [&](int task) {
            const bool isv = task % 2 == 1;
            const int h = task / 2;
            const std::uint16_t* x = (isv ? xv : xk) + h * T * d;
            const std::uint16_t* after_sink = x + sink * d;
            if (s.side_has_patterns(isv) && T > sink) mine_bank(s, isv, seq, h, after_sink, T - sink);
            encode_pages(s, isv, seq, h, after_sink, 0, full, false);
            std::uint16_t* w = std::copy(x, after_sink, s.window(isv, seq, h));
            std::copy(after_sink + full * R * d, x + T * d, w);
        });
    }

    // A full window is flushed when the next token arrives, i.e. after the attention that saw it
    // (method.md section 6): attention always sees 1..R window tokens.
    void append(layer_cache_state& s, std::span<const int> seqs, const std::uint16_t* xk, const std::uint16_t* xv) override {
        const int d = s.d(), H = s.heads();
        const auto n = static_cast<std::int64_t>(seqs.size());
        if (s.plan.jobs > 0)  // the cache's plan: which windows flush, which banks may grow
            tbb::parallel_for(0, s.plan.jobs * 2 * H, [&](int task) {
                const int job = task / (2 * H), h = task / 2 % H;
                const bool v = task % 2 == 1;
                flush_head(s, v, s.plan.flush_seq[job], h, s.plan.grows(job, v, h, H));
            });
        for (std::int64_t i = 0; i < n; ++i) {
            const int seq = seqs[i], w = s.geom.next_row(s.window_count[seq]);
            for (int h = 0; h < s.heads(); ++h) {
                const std::size_t src = (static_cast<std::size_t>(h) * n + i) * d;
                std::copy_n(xk + src, d, s.window(false, seq, h) + static_cast<std::size_t>(w) * d);
                std::copy_n(xv + src, d, s.window(true, seq, h) + static_cast<std::size_t>(w) * d);
            }
        }
    }

    void attend(const layer_cache_state& s, std::span<const int> seqs, const float* q, float* out) const override {
        const int n = static_cast<int>(seqs.size()), d = s.d(), H = s.heads(), G = s.gqa(), Hq = s.cfg.num_q_heads;
        const int cap = s.bank_capacity, stride = core::partial_stride(d, cap), ms = s.max_splits();
        const int pps = core::pages_per_split(s.geom.tokens);
        const float tau = s.cfg.scale();
        const auto qh_index = [&](int i, int hq) { return static_cast<std::size_t>(i) * Hq + hq; };

        // 1. scaled queries and the q . K-pattern tables, per (sequence, KV head) so the bank is
        //    decoded once for its query heads (unused table entries are 0: pages encoded before any
        //    pattern existed carry index 0 and add nothing).
        tbb::parallel_for(0, n * H, [&](int task) {
            const int i = task / H, h = task % H, seq = seqs[i];
            const std::size_t q0 = qh_index(i, h * G);
            for (std::size_t e = q0 * d; e < (q0 + G) * d; ++e) s.q_tau[e] = q[e] * tau;
            if (!s.side_has_patterns(false)) return;  // no K pattern term (core::page_scores skips it)
            const int nb = s.k_bank_size[s.sh(seq, h)];
            run_pattern_scores(s.q_tau.data() + q0 * d, s.bank(false, seq, h), nb, d, s.qm.data() + q0 * cap, G, cap);
            for (int g = 0; g < G; ++g)
                for (int c = nb; c < cap; ++c) s.qm[(q0 + g) * cap + c] = 0.0f;
        });

        // 2. one task per (sequence, KV head, split); the KV head's query heads share its codes.
        tbb::parallel_for(0, n * H * ms, [&](int task) {
            const int i = task / (H * ms), h = task / ms % H, split = task % ms, seq = seqs[i];
            if (split >= total_splits(s, seq)) return;
            const bool window = split == history_splits(s, seq);
            float* buf = s.scratch();
            const std::size_t q0 = qh_index(i, h * G);
            const core::head_group hg{G,
                                      s.q_tau.data() + q0 * d,
                                      s.has_patterns() ? s.qm.data() + q0 * cap : nullptr,
                                      cap,
                                      s.partials.data() + (q0 * ms + split) * stride,
                                      ms * stride};
            // only the V patterns in use can have histogram mass: clear just those entries
            const int hist = s.has_patterns() ? s.v_bank_size[s.sh(seq, h)] : 0;
            if (window) {
                run_window_split(s.window(false, seq, h), s.window(true, seq, h), s.window_count[seq], d, hg, hist, buf);
            } else {
                const int first = split * pps;
                run_history_split(s.head(seq, h), first, std::min(pps, s.pages[seq] - first), hg, hist, buf);
            }
        });

        // 3. combine the splits of each (sequence, query head) in order.
        tbb::parallel_for(0, n * Hq, [&](int task) {
            const int i = task / Hq, hq = task % Hq, seq = seqs[i];
            float* buf = s.scratch();
            const int nb = s.has_patterns() ? s.v_bank_size[s.sh(seq, hq / G)] : 0;
            float* o = buf + cap;
            run_combine(s.partials.data() + qh_index(i, hq) * ms * stride, total_splits(s, seq), d, cap, s.bank(true, seq, hq / G), nb, buf,
                        o);
            std::copy(o, o + d, out + qh_index(i, hq) * d);
        });
    }
};

}  // namespace

std::unique_ptr<cache_backend> make_cpu_backend() { return std::make_unique<cpu_backend>(); }

}  // namespace patternkv

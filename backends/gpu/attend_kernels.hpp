#pragma once
// Decode attention kernels: the splits of core/attention.hpp (pages_per_split(R) history pages per
// split, the window last), one thread per (sequence, query head, split) running the core split
// function with core::scalar_ops, then one thread per (sequence, query head) combining the splits
// in order. Query heads of a GQA group read the same KV head; their results do not depend on being
// processed together (core/attention.hpp fixes every element's sequence of operations).
#include <cstdint>

#include "cache_arrays.hpp"
#include "core/attention.hpp"
#include "encode_kernels.hpp"
#include "runtime.hpp"

namespace patternkv::PKV_GPU_NS {

struct attend_params {
    cache_arrays a;
    cache_counters c;
    const int* seqs;
    int n;             ///< sequences attended
    int q_heads, gqa;  ///< Hq and Hq / H
    float tau;
    int max_splits, pages_per_split;
    const float* q;   ///< [n][Hq][d]
    float* q_tau;     ///< [n][Hq][d]
    float* qm;        ///< [n][Hq][bank_capacity]
    float* partials;  ///< [n][Hq][max_splits][partial_stride]
    float* work;      ///< [n][Hq][max_splits][work_stride]
    std::int64_t work_stride;
    float* hist_acc;  ///< [n][Hq][bank_capacity]
    float* out;       ///< [n][Hq][d]

    __device__ int history_splits(int seq) const { return core::history_splits(c.pages[seq], a.g.tokens); }
    __device__ int total_splits(int seq) const { return core::attention_splits(c.pages[seq], c.window_count[seq], a.g.tokens); }
    __device__ int stride() const { return core::partial_stride(a.g.d, a.bank_capacity); }
};

/// Scaled queries and the q . K-pattern table (entries past the bank are 0), per (sequence, query head).
__global__ void prepare_queries_kernel(attend_params p) {
    const int d = p.a.g.d, cap = p.a.bank_capacity;
    const std::int64_t idx = thread_index();
    if (idx >= static_cast<std::int64_t>(p.n) * p.q_heads) return;
    const int i = static_cast<int>(idx / p.q_heads), hq = static_cast<int>(idx % p.q_heads), seq = p.seqs[i];
    const float* q = p.q + idx * d;
    float* qt = p.q_tau + idx * d;
    for (int j = 0; j < d; ++j) qt[j] = q[j] * p.tau;
    if (cap == 0) return;
    float* qm = p.qm + idx * cap;
    const int h = hq / p.gqa, nb = p.c.bank_size(false, p.a.sh(seq, h));
    core::pattern_scores<core::scalar_ops>(qt, p.a.bank(false, seq, h), nb, d, qm);
    for (int c = nb; c < cap; ++c) qm[c] = 0.0f;
}

/// One split of one (sequence, query head) into its partial record.
__global__ void __launch_bounds__(heavy_threads) attend_splits_kernel(attend_params p) {
    const int d = p.a.g.d, cap = p.a.bank_capacity, ms = p.max_splits;
    const std::int64_t idx = thread_index();
    if (idx >= static_cast<std::int64_t>(p.n) * p.q_heads * ms) return;
    const std::int64_t qh = idx / ms;  // i * Hq + hq
    const int split = static_cast<int>(idx % ms), i = static_cast<int>(qh / p.q_heads), hq = static_cast<int>(qh % p.q_heads);
    const int seq = p.seqs[i], h = hq / p.gqa;
    if (split >= p.total_splits(seq)) return;
    const core::head_group hg{
        1, p.q_tau + qh * d, cap > 0 ? p.qm + qh * cap : nullptr, cap, p.partials + idx * p.stride(), ms * p.stride()};
    float* work = p.work + idx * p.work_stride;
    if (split == p.history_splits(seq)) {
        core::attend_window_split<core::scalar_ops>(p.a.window(false, seq, h), p.a.window(true, seq, h), p.c.window_count[seq], d, hg, cap,
                                                    work);
    } else {
        const int first = split * p.pages_per_split, left = p.c.pages[seq] - first;
        core::attend_history_split<core::scalar_ops>(p.a.head(seq, h), first, left < p.pages_per_split ? left : p.pages_per_split, hg, cap,
                                                     work);
    }
}

/// The splits of one (sequence, query head) combined in order, plus the pattern histogram term.
__global__ void combine_splits_kernel(attend_params p) {
    const int d = p.a.g.d, cap = p.a.bank_capacity;
    const std::int64_t idx = thread_index();
    if (idx >= static_cast<std::int64_t>(p.n) * p.q_heads) return;
    const int i = static_cast<int>(idx / p.q_heads), hq = static_cast<int>(idx % p.q_heads), seq = p.seqs[i];
    const int h = hq / p.gqa, nb = cap > 0 ? p.c.bank_size(true, p.a.sh(seq, h)) : 0;
    core::combine_splits(p.partials + idx * p.max_splits * p.stride(), p.total_splits(seq), d, cap, p.a.bank(true, seq, h), nb,
                         p.hist_acc + idx * cap, p.out + idx * d);
}

}  // namespace patternkv::PKV_GPU_NS

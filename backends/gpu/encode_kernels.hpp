#pragma once
// Kernels that write the cache: prefill (banks of tokens, L2 alignment; k-means is kmeans_kernels.hpp)
// and flush (Chebyshev centre, d_mm alignment), V gate, residual quantization and packing. Each
// kernel maps core/ functions onto threads without touching their arithmetic;
// reference/cpu_backend.cpp is the oracle.
//
// An encode "job" quantizes `pages` consecutive pages of one sequence for every (K/V, head): one job
// for a prefill, one per flushing sequence for an append. Rows of job j, K/V kv, head h, token t:
//   rows + j * job_stride + (kv * H + h) * head_stride + t * d        (floats, fp16 values)
#include <cstdint>
#include <span>

#include "cache_arrays.hpp"
#include "core/encode_row.hpp"
#include "core/fp16.hpp"
#include "core/k_channel_select.hpp"
#include "core/page_quantizer.hpp"
#include "core/patterns.hpp"
#include "core/v_gate.hpp"
#include "runtime.hpp"

namespace patternkv::PKV_GPU_NS {

inline constexpr int elementwise_threads = 256;
inline constexpr int heavy_threads = 128;  ///< kernels whose threads run a whole core function

/// Flat index of this thread in a 1-D grid.
__device__ inline std::int64_t thread_index() { return static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; }

struct encode_params {
    cache_arrays a;
    cache_counters c;
    const int* job_seq;   ///< [jobs] sequence of each job
    const int* job_page;  ///< [jobs] first page each job writes
    int jobs, pages;      ///< pages per job
    const float* rows;
    std::int64_t job_stride, head_stride;
    float* resid;                   ///< [jobs][2][H][pages * R][d]
    float* bank_f;                  ///< [jobs][2][H][bank_capacity][d]: the banks as floats
    std::uint8_t* gate_flags;       ///< [jobs][H][pages * R]: V gate decisions before packing
    std::uint8_t* index_flags;      ///< [jobs][2][H][pages * R]: pattern indices before packing
    std::uint8_t* k_channel_codes;  ///< per-channel K: [jobs][H][pages][d][R], a channel's codes before packing
    bool flush;                     ///< align by d_mm (flush) or squared L2 (prefill)

    __device__ int tokens() const { return pages * a.g.tokens; }
    __device__ const float* row(int job, int kv, int h, int t) const {
        return rows + job * job_stride + (kv * a.heads + h) * head_stride + static_cast<std::int64_t>(t) * a.g.d;
    }
    __device__ float* resid_row(int job, int kv, int h, int t) const {
        return resid + ((static_cast<std::int64_t>(job) * 2 + kv) * a.heads + h) * tokens() * a.g.d + static_cast<std::int64_t>(t) * a.g.d;
    }
    __device__ float* bank(int job, int kv, int h) const {
        return bank_f + ((static_cast<std::int64_t>(job) * 2 + kv) * a.heads + h) * a.bank_capacity * a.g.d;
    }
};

/// out[i] = half_to_float(x[i]).
__global__ void halves_to_floats_kernel(const std::uint16_t* x, std::int64_t n, float* out) {
    const std::int64_t i = thread_index();
    if (i < n) out[i] = core::half_to_float(x[i]);
}

/// The banks in use, as floats (what the CPU's encode_pages decodes before aligning).
__global__ void bank_to_float_kernel(encode_params p) {
    const std::int64_t per = static_cast<std::int64_t>(p.a.bank_capacity) * p.a.g.d;
    const std::int64_t idx = thread_index();
    if (idx >= p.jobs * 2 * p.a.heads * per) return;
    const int block = static_cast<int>(idx / per), job = block / (2 * p.a.heads), kv = block / p.a.heads % 2, h = block % p.a.heads;
    const std::int64_t i = idx % per;
    const int seq = p.job_seq[job];
    if (i < static_cast<std::int64_t>(p.c.bank_size(kv == 1, p.a.sh(seq, h))) * p.a.g.d)
        p.bank(job, kv, h)[i] = core::half_to_float(p.a.bank(kv == 1, seq, h)[i]);
}

/// The config's alignment for core::encode_row: min-max distance at a flush, squared L2 at prefill.
struct pattern_align {
    bool flush;
    int d;
    PKV_HD int operator()(const float* x, const float* bank, int n) const {
        return flush ? core::nearest_pattern_dmm(x, bank, n, d) : core::nearest_pattern_l2(x, bank, n, d);
    }
};

/// The config's V gate for core::encode_row.
struct pattern_gate {
    core::gate_params g;
    int d;
    PKV_HD bool operator()(const float* v, const float* m) const { return core::gate_residualize(v, m, d, g); }
};

/// A user's VGate (concepts.hpp) for core::encode_row, when its residualize is device-callable and
/// the gate is trivially copyable (it is a kernel argument).
template <class G>
struct user_gate {
    G g;
    int d;
    PKV_HD bool operator()(const float* v, const float* m) const {
        return g.residualize(std::span<const float>(v, static_cast<std::size_t>(d)),
                             std::span<const float>(m, static_cast<std::size_t>(d)));
    }
};

/// One token per thread: core::encode_row, then the pattern index and gate flag for packing. Gate:
/// pattern_gate or a user_gate.
template <class Gate>
__global__ void align_kernel(encode_params p, Gate gate) {
    const int d = p.a.g.d, H = p.a.heads, n = p.tokens();
    const std::int64_t idx = thread_index();
    if (idx >= static_cast<std::int64_t>(p.jobs) * 2 * H * n) return;
    const int t = static_cast<int>(idx % n), block = static_cast<int>(idx / n);
    const int job = block / (2 * H), kv = block / H % 2, h = block % H, seq = p.job_seq[job];
    const int nb = p.a.bank_capacity == 0 ? 0 : p.c.bank_size(kv == 1, p.a.sh(seq, h));
    const core::row_choice c = core::encode_row(p.row(job, kv, h, t), p.bank(job, kv, h), nb, d, kv == 1, pattern_align{p.flush, d}, gate,
                                                p.resid_row(job, kv, h, t));
    if (p.a.bank_capacity == 0 || (kv == 0 && !p.a.g.k_patterns)) return;  // no patterns, or K as in KIVI: no index
    // indices below 8 bits share bytes between tokens: pack_index_kernel writes them, a byte per thread
    p.index_flags[((static_cast<std::int64_t>(job) * 2 + kv) * H + h) * n + t] = static_cast<std::uint8_t>(c.index);
    if (kv == 1) p.gate_flags[(static_cast<std::int64_t>(job) * H + h) * n + t] = c.residual ? 1 : 0;
}

/// One byte of packed pattern indices per thread (core::set_pattern_index's layout; padding bits 0).
__global__ void pack_index_kernel(encode_params p) {
    const int R = p.a.g.tokens, H = p.a.heads, bits = p.a.g.index_bits, bytes = p.a.g.index_bytes();
    const std::int64_t idx = thread_index();
    if (idx >= static_cast<std::int64_t>(p.jobs) * 2 * H * p.pages * bytes) return;
    const int b = static_cast<int>(idx % bytes), pg = static_cast<int>(idx / bytes % p.pages);
    const int h = static_cast<int>(idx / (static_cast<std::int64_t>(bytes) * p.pages) % H);
    const int kv = static_cast<int>(idx / (static_cast<std::int64_t>(bytes) * p.pages * H) % 2);
    const int job = static_cast<int>(idx / (static_cast<std::int64_t>(bytes) * p.pages * H * 2));
    if (kv == 0 && !p.a.g.k_patterns) return;
    const std::uint8_t* flags = p.index_flags + ((static_cast<std::int64_t>(job) * 2 + kv) * H + h) * p.tokens() + pg * R;
    const int per_byte = 8 / bits, first = b * per_byte;
    std::uint8_t byte = 0;  // the page's byte b, built with the layout's own setter
    for (int i = 0; i < per_byte && first + i < R; ++i) core::set_pattern_index(&byte, i, bits, flags[first + i]);
    const core::page_ref page = p.a.page(p.job_seq[job], h, p.job_page[job] + pg);
    (kv == 1 ? page.v_index : page.k_index)[b] = byte;
}

/// One gate word per thread: the page's bits from the flags; bits past R keep their value (the CPU
/// sets and clears bit by bit).
__global__ void pack_gate_kernel(encode_params p) {
    const int R = p.a.g.tokens, H = p.a.heads, words = p.a.g.gate_words();
    const std::int64_t idx = thread_index();
    if (idx >= static_cast<std::int64_t>(p.jobs) * H * p.pages * words) return;
    const int w = static_cast<int>(idx % words), pg = static_cast<int>(idx / words % p.pages);
    const int h = static_cast<int>(idx / (static_cast<std::int64_t>(words) * p.pages) % H);
    const int job = static_cast<int>(idx / (static_cast<std::int64_t>(words) * p.pages * H));
    const std::uint8_t* flags = p.gate_flags + (static_cast<std::int64_t>(job) * H + h) * p.tokens() + pg * R;
    const int first = w * 32, count = R - first < 32 ? R - first : 32;
    std::uint32_t bits = 0;
    for (int b = 0; b < count; ++b) bits |= static_cast<std::uint32_t>(flags[first + b] != 0) << b;
    const std::uint32_t mask = count == 32 ? 0xffffffffu : (1u << count) - 1u;
    std::uint32_t* gate = p.a.page(p.job_seq[job], h, p.job_page[job] + pg).v_gate + w;
    *gate = (*gate & ~mask) | bits;
}

/// K per-channel: one (page, channel) per thread.
__global__ void quantize_k_channel_kernel(encode_params p) {
    const int d = p.a.g.d, R = p.a.g.tokens, H = p.a.heads;
    const std::int64_t idx = thread_index();
    if (idx >= static_cast<std::int64_t>(p.jobs) * H * p.pages * d) return;
    const int j = static_cast<int>(idx % d), pg = static_cast<int>(idx / d % p.pages);
    const int h = static_cast<int>(idx / (static_cast<std::int64_t>(d) * p.pages) % H);
    const int job = static_cast<int>(idx / (static_cast<std::int64_t>(d) * p.pages * H));
    const core::page_ref page = p.a.page(p.job_seq[job], h, p.job_page[job] + pg);
    core::quantize_k_channel(p.a.g, p.resid_row(job, 0, h, pg * R), j, page.k_codes, page.k_sm, p.k_channel_codes + idx * R);
}

/// Per-token rows, one token per thread: V (kv = 1) always, K (kv = 0) in per-token mode.
__global__ void quantize_token_rows_kernel(encode_params p, int kv) {
    const int d = p.a.g.d, R = p.a.g.tokens, H = p.a.heads, n = p.tokens();
    const std::int64_t idx = thread_index();
    if (idx >= static_cast<std::int64_t>(p.jobs) * H * n) return;
    const int t = static_cast<int>(idx % n), h = static_cast<int>(idx / n % H), job = static_cast<int>(idx / n / H);
    const core::page_ref page = p.a.page(p.job_seq[job], h, p.job_page[job] + t / R);
    const core::page_geometry& g = p.a.g;
    const int r = t % R;
    if (kv == 1)
        core::quantize_token_row(p.resid_row(job, 1, h, t), d, g.v_group, g.v_bits, page.v_codes + r * g.v_row_words(),
                                 page.v_sm + r * (d / g.v_group));
    else
        core::quantize_token_row(p.resid_row(job, 0, h, t), d, g.k_group, g.k_bits, page.k_codes + r * g.k_row_words(),
                                 page.k_sm + r * (d / g.k_group));
}

// --- prefill only ---------------------------------------------------------------------------------

/// Fewer tokens than patterns: the tokens are the bank (kmeans_miner::mine). x: fp16 rows as floats
/// [2][H][T][d].
__global__ void bank_from_tokens_kernel(cache_arrays a, int seq, const float* x, int T) {
    const std::int64_t per = static_cast<std::int64_t>(T) * a.g.d;
    const std::int64_t idx = thread_index();
    if (idx >= 2 * a.heads * per) return;
    const int block = static_cast<int>(idx / per), kv = block / a.heads, h = block % a.heads;
    if (kv == 0 && !a.g.k_patterns) return;  // no K bank
    a.bank(kv == 1, seq, h)[idx % per] = core::float_to_half(core::round_to_half(x[idx]));
}

/// K channel selection, step 1: each prompt token's nearest K pattern (squared L2) among the first
/// `count` rows of its head's bank, one token per thread. x: K rows as floats [H][T][d]; bank_f: the
/// K banks of the sequence as floats [H][bank_capacity][d]; assign: [H][T].
__global__ void k_select_assign_kernel(cache_arrays a, const float* x, int T, const float* bank_f, int count, int* assign) {
    const std::int64_t idx = thread_index();
    if (idx >= static_cast<std::int64_t>(a.heads) * T) return;
    const int h = static_cast<int>(idx / T), d = a.g.d;
    assign[idx] = core::nearest_pattern_l2(x + idx * d, bank_f + static_cast<std::int64_t>(h) * a.bank_capacity * d, count, d);
}

/// K channel selection, step 2: one (head, channel) per thread; zeroes the fp16 bank column of a
/// channel that does not keep its patterns (core/k_channel_select.hpp; cpu_backend.cpp's
/// select_k_channels does the same). col, codes: `group` floats and bytes of scratch per thread, in
/// global memory (on the stack they would be sized for the longest page, 20 KB per thread, which
/// the driver reserves for every thread the device can hold).
__global__ void k_select_channels_kernel(cache_arrays a, int seq, const float* x, int T, const float* bank_f, int count, const int* assign,
                                         int group, int bits, float* col, std::uint8_t* codes) {
    const std::int64_t idx = thread_index();
    const int d = a.g.d;
    if (idx >= static_cast<std::int64_t>(a.heads) * d) return;
    const int h = static_cast<int>(idx / d), j = static_cast<int>(idx % d);
    const int groups = core::k_select_groups(T, a.g.tokens, group);
    if (!core::keep_k_pattern_channel(
            x + static_cast<std::int64_t>(h) * T * d, d, bank_f + static_cast<std::int64_t>(h) * a.bank_capacity * d,
            assign + static_cast<std::int64_t>(h) * T, groups, group, bits, j, col + idx * group, codes + idx * group)) {
        std::uint16_t* b = a.bank(false, seq, h);
        for (int c = 0; c < count; ++c) b[c * d + j] = 0;  // +0 in fp16
    }
}

/// Prompt rows [first, first + count) go to the fp16 rows from row `to` (the sink rows, then the
/// tokens after the last whole page). x: fp16 [2][H][T][d].
__global__ void window_rows_kernel(cache_arrays a, int seq, const std::uint16_t* x, int T, int first, int count, int to) {
    const std::int64_t per = static_cast<std::int64_t>(count) * a.g.d;
    const std::int64_t idx = thread_index();
    if (idx >= 2 * a.heads * per) return;
    const int block = static_cast<int>(idx / per), kv = block / a.heads, h = block % a.heads;
    a.window(kv == 1, seq, h)[static_cast<std::int64_t>(to) * a.g.d + idx % per] =
        x[static_cast<std::int64_t>(block) * T * a.g.d + static_cast<std::int64_t>(first) * a.g.d + idx % per];
}

/// Prompt rows [first, T) of every (K/V, head) as floats: out [2][H][T - first][d]. x: fp16 [2][H][T][d].
__global__ void prompt_rows_kernel(const std::uint16_t* x, int blocks, int T, int first, int d, float* out) {
    const std::int64_t per = static_cast<std::int64_t>(T - first) * d;
    const std::int64_t idx = thread_index();
    if (idx >= blocks * per) return;
    const std::int64_t block = idx / per;
    out[idx] = core::half_to_float(x[block * T * d + static_cast<std::int64_t>(first) * d + idx % per]);
}

// --- append / flush -------------------------------------------------------------------------------

/// Block table entries pairs[i] set to pairs[n + i] (the entries a call changed, gpu_backend::upload_meta).
__global__ void set_table_entries_kernel(std::int32_t* table, const std::int64_t* pairs, std::int64_t n) {
    const std::int64_t i = thread_index();
    if (i < n) table[pairs[i]] = static_cast<std::int32_t>(pairs[n + i]);
}

/// One decode token per listed sequence into its window at window_count. x: fp16 [2][H][n][d].
__global__ void window_write_kernel(cache_arrays a, cache_counters c, const int* seqs, int n, const std::uint16_t* x) {
    const int d = a.g.d, H = a.heads;
    const std::int64_t idx = thread_index();
    if (idx >= static_cast<std::int64_t>(n) * 2 * H * d) return;
    const int j = static_cast<int>(idx % d), i = static_cast<int>(idx / d % n), h = static_cast<int>(idx / d / n % H);
    const int kv = static_cast<int>(idx / d / n / H), seq = seqs[i];
    a.window(kv == 1, seq, h)[c.window_count[seq] * d + j] = x[((static_cast<std::int64_t>(kv) * H + h) * n + i) * d + j];
}

/// Windows (the rows after the sink) of the flushing sequences as floats: out [jobs][2][H][R][d].
__global__ void window_to_float_kernel(cache_arrays a, const int* job_seq, int jobs, float* out) {
    const std::int64_t per = static_cast<std::int64_t>(a.g.tokens) * a.g.d;
    const std::int64_t idx = thread_index();
    if (idx >= static_cast<std::int64_t>(jobs) * 2 * a.heads * per) return;
    const int block = static_cast<int>(idx / per), job = block / (2 * a.heads), kv = block / a.heads % 2, h = block % a.heads;
    out[idx] = core::half_to_float(a.window(kv == 1, job_seq[job], h)[static_cast<std::int64_t>(a.g.sink) * a.g.d + idx % per]);
}

/// The Chebyshev centre of each flushing window, one channel per thread, appended to the bank at
/// centre_slot[(job * 2 + kv) * H + h] (negative: the bank does not grow). rows: [jobs][2][H][R][d].
__global__ void chebyshev_centre_kernel(cache_arrays a, const int* job_seq, int jobs, const int* centre_slot, const float* rows) {
    const int d = a.g.d, R = a.g.tokens, H = a.heads;
    const std::int64_t idx = thread_index();
    if (idx >= static_cast<std::int64_t>(jobs) * 2 * H * d) return;
    const int j = static_cast<int>(idx % d), block = static_cast<int>(idx / d);
    const int slot = centre_slot[block];
    if (slot < 0) return;
    const int job = block / (2 * H), kv = block / H % 2, h = block % H;
    float centre;
    core::chebyshev_centre(rows + static_cast<std::int64_t>(block) * R * d + j, R, 1, d, &centre);
    a.bank(kv == 1, job_seq[job], h)[slot * d + j] = core::float_to_half(core::round_to_half(centre));
}

}  // namespace patternkv::PKV_GPU_NS

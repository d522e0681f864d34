#pragma once
// Decode attention kernels, in the order of core/attention.hpp: prepare_queries (scaled queries and
// the q . K-pattern tables), then one block per (sequence, KV head, split, head chunk) serving the
// query heads of its GQA group (all of them when the shared memory holds them: the codes are read
// once); the last block of a (sequence, KV head, head chunk) combines the splits in order.
//
// A split block (128 threads, 4 warps of 32 lanes) keeps everything it computes in shared memory;
// only its partial records go to global memory. Pages stream through two or three shared buffers
// when they fit (staged_page: the next one or two pages' codes are copied asynchronously while this
// one is computed).
// Its work, per page of the split:
//   * K, per K group: warp h forms head h's multipliers (q_j s_j, their maximum by a lane fold, the
//     rounding of core/multipliers.hpp), packs them as bytes, and the zero-point term (a lane dot);
//     then every thread takes a run of tokens for up to head_regs heads and sums its integer
//     products over the channels (column_sums: dp4a on byte-gathered codes at 2 and 4 bits; exact,
//     so any thread may do any share) and finishes the score as core::scalar_ops::finish_scores does;
//   * softmax, once per split: warp h finds head h's maximum (a fold) and sums the exponentials in
//     core::lane_sum's order (lane l takes tokens l, l + 32, ..., then the butterfly);
//   * V, per V group: warp h forms the multipliers e_t s_t and the zero-point dot, then threads take
//     runs of channels, sum over the page's tokens (column_sums again) and add the code term to the
//     output in page order; histogram entry (head, pattern) is one thread's, adding gated tokens in
//     token order.
// Every float is computed with the operands and order core/attention.hpp fixes; only integer sums
// and order-free maxima are spread over threads. The window split is the same with fp16 rows.
#include <cstdint>

#include "async_copy.hpp"
#include "atomics.hpp"
#include "block_primitives.hpp"
#include "code_sums.hpp"
#include "cache_arrays.hpp"
#include "core/attention.hpp"
#include "device_views.hpp"
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
    int max_splits;               ///< the most splits of an attended sequence
    int pages_per_split;          ///< core::pages_per_split(R)
    int heads_per_block;          ///< query heads a split block serves (a divisor of gqa)
    int stages;                   ///< shared page buffers of a split block (split_shared): 0, 2 or 3
    bool mma;                     ///< the device has int8 warp matrix products (warp_mma.hpp) and they are not turned off
    input_view q;                 ///< [n][Hq][d]
    unsigned long long* q_fault;  ///< the fault slot of invalid query elements (device_views.hpp)
    float* q_tau;                 ///< [n][Hq][d]
    float* qm;                    ///< [n][Hq][bank_capacity]
    float* partials;              ///< [n][Hq][max_splits][partial_stride]
    float* hist_acc;              ///< [n][Hq][bank_capacity]
    output_rows out;              ///< [n][Hq][d]
    int* done;                    ///< [n][H][gqa / heads_per_block] split blocks finished; 0 between attends

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
    float* qt = p.q_tau + idx * d;
    for (int j = 0; j < d; ++j) qt[j] = p.q.checked<core::valid_query_value>(i, hq, j, seq, p.q_fault) * p.tau;
    if (cap == 0) return;
    float* qm = p.qm + idx * cap;
    const int h = hq / p.gqa, nb = p.c.bank_size(false, p.a.sh(seq, h));
    core::pattern_scores<core::scalar_ops>(qt, p.a.bank(false, seq, h), nb, d, qm);
    for (int c = nb; c < cap; ++c) qm[c] = 0.0f;
}

inline constexpr int split_threads = 128, split_warps = split_threads / static_cast<int>(gpu::warp_lanes);

/// Words of a bit set over a page's tokens.
PKV_HD int token_set_words(const core::page_geometry& g) { return (g.tokens + 31) / 32; }

/// The shared memory of a split block serving `heads` query heads: offsets in floats (each array
/// 16-byte aligned) of the staged queries, multipliers (float products, then packed integers), per-head
/// steps and zero-point terms, per-token K's query group sums, the split's scores (then weights), the
/// outputs, V's zero-point sums, the pattern histograms and `stages` page buffers (a page's K or V
/// codes: one is computed while the next stages - 1 pages stream into the others; 0 reads codes
/// from global memory).
struct split_shared {
    int q, mult, packed, steps, zterm, qsum, scores, o, zsum, hist, pattern_tokens, stage, total;
    int wide;         ///< multipliers per head: max(d, R)
    int stages;       ///< page buffers: 0, or 2 .. max_stages
    int stage_words;  ///< words of one page buffer

    static constexpr int max_stages = 1 + gpu::max_staged_in_flight;

    PKV_HD static split_shared layout(const core::page_geometry& g, int heads, int bank_capacity, int stages) {
        split_shared s{};
        s.wide = g.d > g.tokens ? g.d : g.tokens;
        s.stages = stages;
        const int page_words = g.k_code_words() > g.v_code_words() ? g.k_code_words() : g.v_code_words();
        s.stage_words = (page_words + 3) / 4 * 4;
        const int sizes[12] = {heads * g.d,
                               heads * s.wide,
                               heads * packed_multipliers::words_per_head(s.wide),
                               heads,
                               heads,
                               heads * g.d,
                               heads * core::split_tokens(g),
                               heads * g.d,
                               heads * g.d,
                               heads * bank_capacity,
                               bank_capacity * token_set_words(g),
                               stages * s.stage_words};
        int* offsets[12] = {&s.q,      &s.mult, &s.packed, &s.steps, &s.zterm,          &s.qsum,
                            &s.scores, &s.o,    &s.zsum,   &s.hist,  &s.pattern_tokens, &s.stage};
        for (int i = 0; i < 12; ++i) {
            *offsets[i] = s.total;
            s.total += (sizes[i] + 3) / 4 * 4;
        }
        return s;
    }
    PKV_HD std::size_t bytes() const { return static_cast<std::size_t>(total) * sizeof(float); }
};

/// What the device functions of one split block share: its geometry, its heads' inputs and records,
/// its shared arrays and the calling thread's place.
struct split_block {
    core::page_geometry g;
    int heads, cap;
    const float* qm;  ///< the heads' q . K-pattern tables [heads][cap] (global), or nullptr without patterns
    float* rec;       ///< head hh's partial record at rec + hh * rec_stride (global)
    std::int64_t rec_stride;
    int n;  ///< scores per head (the split's tokens at most)
    split_shared at;
    float* smem;
    int tid, lane, warp;
    bool mma;  ///< attend_params::mma

    __device__ float* q(int hh) const { return smem + at.q + hh * g.d; }
    __device__ float* mult(int hh) const { return smem + at.mult + hh * at.wide; }
    /// The integer multipliers of head hh, at most `qmax` in magnitude.
    __device__ packed_multipliers packed(int hh, int qmax) const {
        return {reinterpret_cast<std::uint32_t*>(smem + at.packed) + hh * packed_multipliers::words_per_head(at.wide), (at.wide + 3) / 4,
                packed_multipliers::narrow_for(qmax)};
    }
    __device__ float* steps() const { return smem + at.steps; }
    __device__ float* zterm() const { return smem + at.zterm; }
    __device__ float* qsum(int hh) const { return smem + at.qsum + hh * g.d; }
    __device__ float* scores(int hh) const { return smem + at.scores + hh * n; }
    __device__ float* o(int hh) const { return smem + at.o + hh * g.d; }
    __device__ float* zsum(int hh) const { return smem + at.zsum + hh * g.d; }
    __device__ float* hist(int hh) const { return smem + at.hist + hh * cap; }
    /// Per V pattern, the page's tokens gated to it: a bit set of token_set_words(g) words each.
    __device__ std::uint32_t* pattern_tokens() const { return reinterpret_cast<std::uint32_t*>(smem + at.pattern_tokens); }
    __device__ float* record(int hh) const { return rec + hh * rec_stride; }
    __device__ std::uint32_t* stage_buffer(int i) const {
        return reinterpret_cast<std::uint32_t*>(smem + at.stage) + static_cast<std::int64_t>(i % at.stages) * at.stage_words;
    }
    /// Passes over the heads, head_regs at a time.
    __device__ int head_passes() const { return (heads + head_regs - 1) / head_regs; }
    /// The heads of pass `pass`: the first, and how many (at most head_regs), and their multipliers.
    __device__ void pass_heads(int pass, int qmax, int& h0, int& hn, packed_multipliers (&pm)[head_regs]) const {
        h0 = pass * head_regs;
        hn = heads - h0 < head_regs ? heads - h0 : head_regs;
        for (int hh = 0; hh < head_regs; ++hh) pm[hh] = packed(h0 + (hh < hn ? hh : 0), qmax);
    }
};

/// Warp-wide: m[i] = x[i] * y[i] for i < n rounded to integer multipliers (core's
/// quantize_multipliers, the maximum by a fold) and the dot of x with z (core::lane_dot's order),
/// where y[i], z[i] = scale_of(i) (and its centred minimum); pm gets the multipliers and their sum
/// (m the products). Returns the half step; *dot gets the dot.
template <class ScaleOf>
__device__ float warp_multipliers(const float* x, int n, int qmax, int lane, ScaleOf scale_of, float* m, const packed_multipliers& pm,
                                  float* dot) {
    float amax = 0.0f, acc = 0.0f;
    for (int i = lane; i < n; i += gpu::warp_lanes) {
        float scale, mnc;
        scale_of(i, scale, mnc);
        m[i] = x[i] * scale;
        amax = core::max_magnitude(m + i, 1, amax);
        acc = acc + x[i] * mnc;
    }
    const core::multiplier_rounding round = core::rounding_for(gpu::lane_fold<gpu::fold_max>(amax), qmax);
    *dot = gpu::lane_fold<gpu::fold_add>(acc);
    std::int32_t sum = 0;
    for (int i = lane; i < n; i += gpu::warp_lanes) {
        const auto mi = static_cast<std::int32_t>(round(m[i]));
        pm.set(i, mi);
        sum += mi;
    }
    sum = gpu::lane_fold<gpu::fold_add_int>(sum);
    if (lane == 0) pm.set_sum(sum);
    return 0.5f * round.step;
}

/// A (scale, centred minimum) reader of fp16 pairs sm[i * stride].
struct scale_pairs {
    const core::scale_min* sm;
    int stride;
    float centre;
    __device__ void operator()(int i, float& scale, float& mnc) const {
        const core::scale_min v = sm[i * stride];
        scale = core::half_to_float(v.scale);
        mnc = core::half_to_float(v.min) + centre * scale;
    }
};

/// column_sums' path on devices with int8 warp matrix products (mma_columns): each warp takes a tile
/// (4 words of the run, 16 byte columns) for up to head_regs heads at a time, and each lane finishes
/// its own positions for its two heads (mma_tile_sums' map).
template <int bits, bool narrow, class Finish>
__device__ void mma_column_sums(const split_block& b, const std::uint32_t* codes, int row_words, int rows, int qmax, int p0, int positions,
                                Finish finish) {
    constexpr int cpw = core::codes_per_word(bits), per_byte = 8 / bits;
    const int words = positions / cpw, tiles = (words + 3) / 4, g = b.lane / 4, c = b.lane % 4;
    for (int e = b.warp; e < b.head_passes() * tiles; e += split_warps) {  // uniform over the warp: every lane takes part
        const int h0 = e / tiles * head_regs, hn = b.heads - h0 < head_regs ? b.heads - h0 : head_regs;
        const int w = (e % tiles) * 4 + g / 2;  // the lane's word of the run
        const packed_multipliers own = b.packed(h0 + (g < hn ? g : 0), qmax);
        std::uint32_t plain[per_byte][4];
        mma_tile_sums<bits, narrow>(w < words ? codes + p0 / cpw + w : nullptr, row_words, rows, b.lane, g < hn ? &own : nullptr, plain);
        const int heads = hn - 2 * c < 2 ? hn - 2 * c : 2;  // the lane's heads h0 + 2c, h0 + 2c + 1
        if (w >= words || heads <= 0) continue;
        const std::int32_t sum0 = b.packed(h0 + 2 * c, qmax).sum(), sum1 = heads > 1 ? b.packed(h0 + 2 * c + 1, qmax).sum() : 0;
        for (int r = 0; r < 2; ++r)  // rows g and g + 8: bytes g % 2 and 2 + g % 2 of word w
            for (int m = 0; m < per_byte; ++m) {
                const std::int32_t sums[2] = {centred(plain[m][2 * r], sum0, bits), centred(plain[m][2 * r + 1], sum1, bits)};
                finish(p0 + w * cpw + (2 * r + g % 2) * per_byte + m, h0 + 2 * c, heads, sums);
            }
    }
}

/// For every position p in [p0, p0 + positions) of the rows at codes + r * row_words (r < rows) and
/// the heads [h0, h0 + hn) of one item: finish(p, h0, hn, sums), sums[hh - h0] the centred sum of
/// head hh's multipliers (at most qmax in magnitude) times the codes at p. With warp matrix
/// products, mma_column_sums; else a thread takes one item, a run of positions for up to head_regs
/// heads: on byte_columns' path a byte of a word column (8 / bits positions; the four threads of a
/// word read the same four words, neighbouring words go to neighbouring threads), else one position.
template <class Finish>
__device__ void column_sums(const split_block& b, const std::uint32_t* codes, int row_words, int rows, int bits, int qmax, int p0,
                            int positions, Finish finish) {
    if (mma_columns(b.mma, bits, rows, positions)) {
        with_byte_kind(bits, packed_multipliers::narrow_for(qmax), [&](auto width, auto narrow) {
            mma_column_sums<width(), narrow()>(b, codes, row_words, rows, qmax, p0, positions, finish);
        });
        return;
    }
    const bool bytes = byte_columns(bits, rows, positions);
    const int per_item = bytes ? 8 / bits : 1, items = positions / per_item;
    for (int e = b.tid; e < b.head_passes() * items; e += split_threads) {
        int h0, hn;
        packed_multipliers pm[head_regs];
        b.pass_heads(e / items, qmax, h0, hn, pm);
        const int first = p0 + (e % items) * per_item;
        std::int32_t sums[4][head_regs];
        if (bytes)
            with_byte_kind(bits, pm[0].narrow, [&](auto width, auto narrow) {
                byte_code_sums<width(), narrow()>(codes, row_words, rows, first / core::codes_per_word(bits),
                                                  first % core::codes_per_word(bits) / per_item, pm, hn, sums);
            });
        else
            centred_code_sums(codes, row_words, rows, bits, first, 0, pm, 0, hn, sums[0]);
        for (int m = 0; m < per_item; ++m) finish(first + m, h0, hn, sums[m]);
    }
}

/// Scores of K group [t0, t0 + k_group) of a per-channel K page, into scores columns col + t.
__device__ inline void split_k_channel_group(const split_block& b, const core::page_view& pv, int t0, int col) {
    const core::page_geometry& g = b.g;
    const int d = g.d, kg = g.k_group;
    const int qmax = core::multiplier_max(false, d, g.k_bits);
    const scale_pairs pairs{pv.k_sm + (t0 / kg) * d, 1, core::code_centre(g.k_bits)};
    for (int hh = b.warp; hh < b.heads; hh += split_warps) {
        float z;
        const float half_step = warp_multipliers(b.q(hh), d, qmax, b.lane, pairs, b.mult(hh), b.packed(hh, qmax), &z);
        if (b.lane == 0) b.steps()[hh] = half_step, b.zterm()[hh] = z;
    }
    __syncthreads();
    const bool patterns = b.qm != nullptr && g.k_patterns;
    column_sums(b, pv.k_codes, g.k_row_words(), d, g.k_bits, qmax, t0, kg, [&](int t, int h0, int hn, const std::int32_t* sums) {
        const int a = patterns ? core::pattern_index(pv.k_index, t, g.index_bits) : -1;  // once per token, for every head
        for (int hh = h0; hh < h0 + hn; ++hh) {
            float s = b.steps()[hh] * static_cast<float>(sums[hh - h0]) + b.zterm()[hh];
            if (a >= 0) s = s + b.qm[hh * b.cap + a];
            b.scores(hh)[col + t] = s;
        }
    });
    __syncthreads();
}

/// Per-token K: the query multipliers and group sums of every head (once per block).
__device__ inline void split_k_token_setup(const split_block& b) {
    const core::page_geometry& g = b.g;
    const int d = g.d, groups = d / g.k_group;
    const int qmax = core::multiplier_max(false, d, g.k_bits);
    const auto same = [](int, float& scale, float& mnc) { scale = 1.0f, mnc = 0.0f; };  // q_j * 1 is q_j: the multipliers of q itself
    for (int hh = b.warp; hh < b.heads; hh += split_warps) {
        float unused;
        const float half_step = warp_multipliers(b.q(hh), d, qmax, b.lane, same, b.mult(hh), b.packed(hh, qmax), &unused);
        if (b.lane == 0) b.steps()[hh] = half_step;
    }
    for (int e = b.tid; e < b.heads * groups; e += split_threads) {
        const int hh = e / groups, gi = e % groups;
        core::scalar_ops::group_sums(b.q(hh) + gi * g.k_group, g.k_group, g.k_group, b.qsum(hh) + gi);
    }
    __syncthreads();
}

/// Scores of a per-token K page (the KIVI per-token baseline), into scores columns col + t.
__device__ inline void split_k_token_page(const split_block& b, const core::page_view& pv, int col) {
    const core::page_geometry& g = b.g;
    const int d = g.d, R = g.tokens, kg = g.k_group, groups = d / kg;
    const float centre = core::code_centre(g.k_bits);
    for (int e = b.tid; e < b.head_passes() * R; e += split_threads) {  // one token, up to head_regs heads
        const int t = e % R;
        int h0, hn;
        packed_multipliers pm[head_regs];
        b.pass_heads(e / R, core::multiplier_max(false, d, g.k_bits), h0, hn, pm);
        const std::uint32_t* row = pv.k_codes + t * g.k_row_words();
        float total[head_regs] = {};
        for (int gi = 0; gi < groups; ++gi) {
            std::int32_t sums[head_regs];
            centred_code_sums(row, 0, kg, g.k_bits, gi * kg, 1, pm, gi * kg, hn, sums);
            for (int hh = 0; hh < hn; ++hh)
                total[hh] = core::scalar_ops::token_group_term(total[hh], pv.k_sm[t * groups + gi], centre, b.steps()[h0 + hh], sums[hh],
                                                               b.qsum(h0 + hh)[gi]);
        }
        const int a = b.qm != nullptr && g.k_patterns ? core::pattern_index(pv.k_index, t, g.index_bits) : -1;
        for (int hh = 0; hh < hn; ++hh) b.scores(h0 + hh)[col + t] = a >= 0 ? total[hh] + b.qm[(h0 + hh) * b.cap + a] : total[hh];
    }
    __syncthreads();
}

/// The split's softmax over its first `n` scores of every head: the maximum (a zero maximum is +0)
/// and the sum of exponentials in core::lane_sum's order go to the record, the weights stay.
__device__ inline void split_softmax(const split_block& b, int n) {
    for (int hh = b.warp; hh < b.heads; hh += split_warps) {
        float* s = b.scores(hh);
        float m = s[b.lane < n ? b.lane : 0];
        for (int j = b.lane; j < n; j += gpu::warp_lanes) m = s[j] > m ? s[j] : m;
        m = gpu::lane_fold<gpu::fold_max>(m) + 0.0f;
        float l = 0.0f;
        for (int j = b.lane; j < n; j += gpu::warp_lanes) {
            s[j] = core::exp_fixed(s[j] - m);
            l = l + s[j];
        }
        l = gpu::lane_fold<gpu::fold_add>(l);
        if (b.lane == 0) b.record(hh)[0] = m, b.record(hh)[1] = l;
    }
    __syncthreads();
}

/// One page's V contribution with the weights in scores columns col + t: per V group the weighted
/// multipliers, the zero-point sums and the code terms; then the histogram of gated tokens.
__device__ inline void split_v_page(const split_block& b, const core::page_view& pv, int col) {
    const core::page_geometry& g = b.g;
    const int d = g.d, R = g.tokens, vg = g.v_group, groups = d / vg, qmax = core::multiplier_max(true, R, g.v_bits);
    for (int gi = 0; gi < groups; ++gi) {
        const scale_pairs pairs{pv.v_sm + gi, groups, core::code_centre(g.v_bits)};
        for (int hh = b.warp; hh < b.heads; hh += split_warps) {
            float z;
            const float half_step = warp_multipliers(b.scores(hh) + col, R, qmax, b.lane, pairs, b.mult(hh), b.packed(hh, qmax), &z);
            if (b.lane == 0) b.steps()[hh] = half_step, b.zsum(hh)[gi] = b.zsum(hh)[gi] + z;
        }
        __syncthreads();
        column_sums(b, pv.v_codes, g.v_row_words(), R, g.v_bits, qmax, gi * vg, vg, [&](int j, int h0, int hn, const std::int32_t* sums) {
            for (int hh = h0; hh < h0 + hn; ++hh) b.o(hh)[j] = b.o(hh)[j] + b.steps()[hh] * static_cast<float>(sums[hh - h0]);
        });
        __syncthreads();
    }
    if (b.cap == 0) return;
    // Each pattern's gated tokens as a bit set, built once per page by order-free ORs, so that entry
    // (head, pattern) visits only its own tokens (lowest bit first: token order), not all R of them
    // (at 16 patterns and GQA 4, R compares per entry cost about as much as all the code sums).
    const int words = token_set_words(g);
    std::uint32_t* sets = b.pattern_tokens();
    for (int i = b.tid; i < b.cap * words; i += split_threads) sets[i] = 0;
    __syncthreads();
    for (int t = b.tid; t < R; t += split_threads)
        if (const int c = static_cast<int>(core::pattern_index(pv.v_index, t, g.index_bits)); core::gate_bit(pv.v_gate, t) && c < b.cap)
            gpu::atomic_or(sets + c * words + t / 32, 1u << (t % 32));
    __syncthreads();
    for (int e = b.tid; e < b.heads * b.cap; e += split_threads) {  // entry (hh, c) adds its gated tokens in token order
        const int hh = e / b.cap, c = e % b.cap;
        const float* w = b.scores(hh) + col;
        const std::uint32_t* set = sets + c * words;
        float sum = b.hist(hh)[c];
        for (int i = 0; i < words; ++i)
            for (std::uint32_t bits = set[i]; bits != 0; bits &= bits - 1) sum = sum + w[i * 32 + core::lowest_bit(bits)];
        b.hist(hh)[c] = sum;
    }
}

/// Where page i of a pass over `count` pages reads its codes (`words` words at codes(i), global):
/// without staging codes(i) itself; with it, the stage buffer that page i's codes were streamed into,
/// stages - 1 pages ahead (pages 0 .. stages - 2 issued here for i = 0), after this call issued page
/// i + stages - 1 into the buffer page i - 1 used. Every step issues one group (an empty one past
/// the pass), so a thread's newest stages - 2 groups are the pages after i when it waits for page i.
/// Called by every thread of the block, for i = 0, 1, ... in turn, after the previous page's last
/// barrier.
template <class Codes>
__device__ const std::uint32_t* staged_page(const split_block& b, int i, int count, int words, Codes codes) {
    const int ahead = b.at.stages - 1;
    if (ahead < 0) return codes(i);
    const auto issue = [&](int k) {
        gpu::stage_async(b.stage_buffer(k), k < count ? codes(k) : nullptr, k < count ? words : 0, b.tid, split_threads);
    };
    if (i == 0)
        for (int k = 0; k < ahead; ++k) issue(k);
    gpu::wait_staged(ahead - 1);
    __syncthreads();  // page i has landed, from every thread's copies; page i - 1's buffer is no longer read
    issue(i + ahead);
    return b.stage_buffer(i);
}

/// A history split: pages [first, first + count) of (seq, h).
__device__ inline void split_history(const split_block& b, const core::head_pages& hp, int first, int count) {
    const core::page_geometry& g = b.g;
    const int d = g.d, groups = d / g.v_group;
    for (int e = b.tid; e < b.heads * d; e += split_threads) b.o(e / d)[e % d] = 0.0f;
    for (int e = b.tid; e < b.heads * groups; e += split_threads) b.zsum(e / groups)[e % groups] = 0.0f;
    for (int e = b.tid; e < b.heads * b.cap; e += split_threads) b.hist(e / b.cap)[e % b.cap] = 0.0f;
    if (!g.k_per_channel) split_k_token_setup(b);
    const auto k_codes = [&](int i) { return hp.page(first + i).k_codes; };
    for (int i = 0; i < count; ++i) {
        core::page_view pv = hp.page(first + i);
        pv.k_codes = staged_page(b, i, count, g.k_code_words(), k_codes);
        if (g.k_per_channel)
            for (int t0 = 0; t0 < g.tokens; t0 += g.k_group) split_k_channel_group(b, pv, t0, i * g.tokens);
        else
            split_k_token_page(b, pv, i * g.tokens);
    }
    split_softmax(b, count * g.tokens);
    const auto v_codes = [&](int i) { return hp.page(first + i).v_codes; };
    for (int i = 0; i < count; ++i) {
        core::page_view pv = hp.page(first + i);
        pv.v_codes = staged_page(b, i, count, g.v_code_words(), v_codes);
        split_v_page(b, pv, i * g.tokens);
    }
    __syncthreads();
    for (int e = b.tid; e < b.heads * d; e += split_threads) {
        const int hh = e / d, j = e % d;
        b.record(hh)[2 + j] = b.o(hh)[j] + b.zsum(hh)[j / g.v_group];
    }
    for (int e = b.tid; e < b.heads * b.cap; e += split_threads) b.record(e / b.cap)[2 + d + e % b.cap] = b.hist(e / b.cap)[e % b.cap];
}

/// The window split: n >= 1 fp16 rows wk, wv [n][d].
__device__ inline void split_window(const split_block& b, const std::uint16_t* wk, const std::uint16_t* wv, int n) {
    const int d = b.g.d;
    for (int e = b.warp; e < b.heads * n; e += split_warps) {
        const int hh = e / n, t = e % n;
        const float* q = b.q(hh);
        float acc = 0.0f;
        for (int j = b.lane; j < d; j += gpu::warp_lanes) acc = acc + q[j] * core::half_to_float(wk[t * d + j]);
        acc = gpu::lane_fold<gpu::fold_add>(acc);
        if (b.lane == 0) b.scores(hh)[t] = acc;
    }
    __syncthreads();
    split_softmax(b, n);
    for (int e = b.tid; e < b.heads * d; e += split_threads) {
        const int hh = e / d, j = e % d;
        const float* w = b.scores(hh);
        float acc = 0.0f;
        for (int t = 0; t < n; ++t) acc = core::fma_exact(w[t], core::half_to_float(wv[t * d + j]), acc);
        b.record(hh)[2 + j] = acc;
    }
    for (int e = b.tid; e < b.heads * b.cap; e += split_threads) b.record(e / b.cap)[2 + d + e % b.cap] = 0.0f;
}

/// The splits of query head qh (flat over [n][Hq]) of the i-th attended sequence combined in order,
/// plus the pattern histogram term, into its output row.
__device__ inline void combine_query_head(const attend_params& p, int i, std::int64_t qh) {
    const int d = p.a.g.d, cap = p.a.bank_capacity, seq = p.seqs[i], hq = static_cast<int>(qh % p.q_heads);
    const int h = hq / p.gqa, nb = cap > 0 ? p.c.bank_size(true, p.a.sh(seq, h)) : 0;
    core::combine_splits(p.partials + qh * p.max_splits * p.stride(), p.total_splits(seq), d, cap, p.a.bank(true, seq, h), nb,
                         p.hist_acc + qh * cap, p.out.row(i, hq));
}

/// Whether this block is the last of its (sequence, KV head, head chunk) to finish, after every
/// thread wrote its part of the records: the block's writes are published by a fence before the
/// count, and the last block (which then resets the count for the next attend) reads the others'
/// after its own fence.
__device__ inline bool last_split_block(int* count, int splits, int tid) {
    __shared__ int last;
    __syncthreads();
    if (tid == 0) {
        gpu::thread_fence();
        last = gpu::atomic_add(count, 1) == splits - 1;
        if (last) *count = 0;
    }
    __syncthreads();
    if (last) gpu::thread_fence();
    return last;
}

/// One block per (sequence, KV head, head chunk, split): the split's partial records of the chunk's
/// query heads (heads_per_block consecutive heads of the GQA group); the chunk's last block to
/// finish combines them into the outputs (no combine launch).
__global__ void __launch_bounds__(split_threads) attend_split_kernel(attend_params p) {
    const int ms = p.max_splits, chunks = p.gqa / p.heads_per_block, H = p.a.heads, d = p.a.g.d, cap = p.a.bank_capacity;
    int rest = static_cast<int>(blockIdx.x);
    const int split = rest % ms;
    rest /= ms;
    const int chunk = rest % chunks;
    rest /= chunks;
    const int h = rest % H, i = rest / H, seq = p.seqs[i];
    if (split >= p.total_splits(seq)) return;  // the whole block, before any barrier
    const std::int64_t qh0 = static_cast<std::int64_t>(i) * p.q_heads + h * p.gqa + chunk * p.heads_per_block;
    const int tid = static_cast<int>(threadIdx.x), lane = tid % static_cast<int>(gpu::warp_lanes);
    const split_block b{p.a.g,
                        p.heads_per_block,
                        cap,
                        cap > 0 ? p.qm + qh0 * cap : nullptr,
                        p.partials + (qh0 * ms + split) * p.stride(),
                        static_cast<std::int64_t>(ms) * p.stride(),
                        core::split_tokens(p.a.g),
                        split_shared::layout(p.a.g, p.heads_per_block, cap, p.stages),
                        gpu::dynamic_shared<float>(),
                        tid,
                        lane,
                        tid / static_cast<int>(gpu::warp_lanes),
                        p.mma};
    for (int e = tid; e < b.heads * d; e += split_threads) b.q(e / d)[e % d] = p.q_tau[qh0 * d + e];
    __syncthreads();
    if (split == p.history_splits(seq)) {
        split_window(b, p.a.window(false, seq, h), p.a.window(true, seq, h), p.c.window_count[seq]);
    } else {
        const int first = split * p.pages_per_split, left = p.c.pages[seq] - first;
        split_history(b, p.a.head(seq, h), first, left < p.pages_per_split ? left : p.pages_per_split);
    }
    int* count = p.done + (static_cast<std::int64_t>(i) * H + h) * chunks + chunk;
    if (!last_split_block(count, p.total_splits(seq), tid)) return;
    for (int hh = tid; hh < b.heads; hh += split_threads) combine_query_head(p, i, qh0 + hh);
}

}  // namespace patternkv::PKV_GPU_NS

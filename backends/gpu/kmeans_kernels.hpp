#pragma once
// The prefill's k-means (core/kmeans.hpp's steps, as kmeans_miner::mine runs them on the CPU) for
// every mined (K/V, head) bank at once, each bank's tokens spread over many blocks so that one
// prompt fills a device. mine_banks launches, per prefill:
//   init: every token's key (core::kmeans_init_key), then the k first (key, token) pairs by a radix
//         select of the k-th key's high digits and an exact rank of the few candidates it leaves;
//   per iteration: assignment and in-tile ranks (a block per tile of tokens), the member lists'
//         ends (a block per bank), stable member lists (a token per thread), the centroid update (a
//         (centroid, coordinate) per thread, its member sum one chain in token order, the bank's
//         largest change by a warp fold and an atomic max), the stop test (a bank per thread);
//   the banks as fp16.
// No step goes back to the host: once a bank's stop test holds, its later kernels return at once.
// Counts and maxima are the only things combined in a varying order (exact in any order); every
// float sum is one thread's chain.
#include <cstdint>

#include "atomics.hpp"
#include "block_primitives.hpp"
#include "cache_arrays.hpp"
#include "core/fp16.hpp"
#include "core/hash.hpp"
#include "core/kmeans.hpp"
#include "core/patterns.hpp"
#include "encode_kernels.hpp"
#include "runtime.hpp"

namespace patternkv::PKV_GPU_NS {

inline constexpr int kmeans_tile = 256;  ///< tokens per block of the assignment; threads of the block kernels
inline constexpr int select_digit_bits = 8;
inline constexpr int select_digits = 1 << select_digit_bits;  ///< threads of select_digit_kernel
inline constexpr int select_extra = 256;                      ///< candidates beyond k the select aims at

// --- k smallest keys ------------------------------------------------------------------------------

/// One problem's radix select: the high bits of its k-th smallest key decided so far, and how many
/// keys lie below them.
struct select_state {
    std::uint64_t prefix;
    int below;
    int candidates;  ///< keys collected for the exact rank
};

/// Per problem, the k first of n (key, index) pairs in core::kmeans_init_before's order.
struct select_args {
    const std::uint64_t* keys;  ///< [problems][n]
    int problems, n, k;
    int passes;           ///< radix digits decided before the candidates are collected
    select_state* state;  ///< [problems]
    int* digit_counts;    ///< [problems][select_digits]
    int* candidates;      ///< [problems][n]
    int* chosen;          ///< [problems][k] out: the indices, in that order
};

/// Radix passes for n hash keys: n / 256^passes keys are expected to share the k-th key's decided
/// digits, so stopping once that is at most select_extra leaves about k + select_extra candidates
/// to rank. Any number of passes gives the same result; only the cost relies on hash keys.
inline int select_passes(int n) {
    int passes = 1;
    while (passes < 64 / select_digit_bits && (static_cast<std::int64_t>(n) >> (passes * select_digit_bits)) > select_extra) ++passes;
    return passes;
}

/// Whether `key` has the `bits` high bits of `prefix`.
__device__ inline bool same_high_bits(std::uint64_t key, std::uint64_t prefix, int bits) {
    return bits == 0 || (key >> (64 - bits)) == (prefix >> (64 - bits));
}

/// A fresh select: zero counts and states, one (problem, digit) per thread.
__global__ void select_reset_kernel(select_args s) {
    const std::int64_t idx = thread_index();
    if (idx >= static_cast<std::int64_t>(s.problems) * select_digits) return;
    s.digit_counts[idx] = 0;
    if (idx % select_digits == 0) s.state[idx / select_digits] = {};
}

/// Radix pass `pass`, one key per thread: counts of the next digit among the keys that have the
/// digits decided so far.
__global__ void select_count_kernel(select_args s, int pass) {
    const std::int64_t idx = thread_index();
    if (idx >= static_cast<std::int64_t>(s.problems) * s.n) return;
    const int b = static_cast<int>(idx / s.n), decided = pass * select_digit_bits;
    const std::uint64_t key = s.keys[idx];
    if (!same_high_bits(key, s.state[b].prefix, decided)) return;
    const int digit = static_cast<int>(key >> (64 - decided - select_digit_bits)) & (select_digits - 1);
    gpu::atomic_add(s.digit_counts + b * select_digits + digit, 1);
}

/// Radix pass `pass`, a block per problem and a thread per digit: the digit whose keys hold the
/// k-th smallest joins the prefix. Clears the counts for the next pass.
__global__ void __launch_bounds__(select_digits) select_digit_kernel(select_args s, int pass) {
    __shared__ int counts[select_digits];
    const int b = static_cast<int>(blockIdx.x), digit = static_cast<int>(threadIdx.x);
    const select_state before = s.state[b];  // every thread reads it before the barrier; one writes it after
    int* global_counts = s.digit_counts + b * select_digits;
    counts[digit] = global_counts[digit];
    global_counts[digit] = 0;
    __syncthreads();
    int below = before.below;
    for (int i = 0; i < digit; ++i) below += counts[i];
    if (below < s.k && s.k <= below + counts[digit]) {
        s.state[b].prefix = before.prefix | static_cast<std::uint64_t>(digit) << (64 - (pass + 1) * select_digit_bits);
        s.state[b].below = below;
    }
}

/// The candidates, one key per thread: every key whose decided digits are at most the prefix's
/// (the keys below it and the k-th key's bucket), listed in any order.
__global__ void select_collect_kernel(select_args s) {
    const std::int64_t idx = thread_index();
    if (idx >= static_cast<std::int64_t>(s.problems) * s.n) return;
    const int b = static_cast<int>(idx / s.n), low = 64 - s.passes * select_digit_bits;
    if ((s.keys[idx] >> low) > (s.state[b].prefix >> low)) return;
    const int slot = gpu::atomic_add(&s.state[b].candidates, 1);
    s.candidates[static_cast<std::int64_t>(b) * s.n + slot] = static_cast<int>(idx % s.n);
}

/// Each candidate's rank among its problem's candidates in core::kmeans_init_before's order; the k
/// first go to `chosen` at their rank. `blocks` blocks per problem, candidates strided over their
/// threads (a bucket of tied keys, however large, is ranked exactly).
__global__ void select_rank_kernel(select_args s, int blocks) {
    const int b = static_cast<int>(blockIdx.x) / blocks, count = s.state[b].candidates;
    const int* candidates = s.candidates + static_cast<std::int64_t>(b) * s.n;
    const std::uint64_t* keys = s.keys + static_cast<std::int64_t>(b) * s.n;
    const int stride = blocks * static_cast<int>(blockDim.x);
    for (int i = static_cast<int>(blockIdx.x) % blocks * static_cast<int>(blockDim.x) + static_cast<int>(threadIdx.x); i < count;
         i += stride) {
        const int t = candidates[i];
        int rank = 0;
        for (int j = 0; j < count; ++j) rank += core::kmeans_init_before(keys[candidates[j]], candidates[j], keys[t], t) ? 1 : 0;
        if (rank < s.k) s.chosen[b * s.k + rank] = t;
    }
}

/// Writes s.chosen from s.keys (s.n > s.k).
inline void select_smallest(gpu::stream_t stream, const select_args& s) {
    const int E = elementwise_threads;
    const std::int64_t keys = static_cast<std::int64_t>(s.problems) * s.n;
    gpu::launch(stream, select_reset_kernel, gpu::blocks_for(static_cast<std::int64_t>(s.problems) * select_digits, E), E, "select_reset",
                s);
    for (int pass = 0; pass < s.passes; ++pass) {
        gpu::launch(stream, select_count_kernel, gpu::blocks_for(keys, E), E, "select_count", s, pass);
        gpu::launch_with_barriers(stream, select_digit_kernel, static_cast<unsigned>(s.problems), select_digits, 0, "select_digit", s,
                                  pass);
    }
    gpu::launch(stream, select_collect_kernel, gpu::blocks_for(keys, E), E, "select_collect", s);
    const int blocks = static_cast<int>(gpu::blocks_for(s.k + select_extra, E));
    gpu::launch(stream, select_rank_kernel, static_cast<unsigned>(s.problems * blocks), E, "select_rank", s, blocks);
}

// --- k-means ----------------------------------------------------------------------------------------

/// One bank's progress.
struct kmeans_state {
    int stopped;               ///< the stop test held: the bank's later kernels return at once
    std::uint32_t shift_bits;  ///< this iteration's largest |coordinate change|, as float bits
};

/// Device scratch of one mine_banks call (kmeans_workspace).
struct kmeans_buffers {
    float* centroids;      ///< [problems][k][d]
    std::uint64_t* keys;   ///< [problems][T]: the init keys
    int* assign;           ///< [problems][T]
    int* tile_rank;        ///< [problems][T]: among the earlier tokens of its tile in its cluster
    int* tile_counts;      ///< [problems][tiles][k]: members per tile, then in the earlier tiles
    int* ends;             ///< [problems][k]: core::kmeans_cluster_members' layout
    int* members;          ///< [problems][T]
    kmeans_state* state;   ///< [problems]
    select_state* select;  ///< [problems]
    int* digit_counts;     ///< [problems][select_digits]
    int* candidates;       ///< [problems][T]
    int* chosen;           ///< [problems][k]: the initial tokens
};

/// The banks of (K/V, head) pairs first .. first + problems - 1 (as kv * H + h) mined from x.
struct kmeans_args {
    cache_arrays a;
    int seq, T;
    int first, problems;
    const float* x;  ///< [2][H][T][d]
    int k, iterations;
    float tolerance;
    std::uint64_t seed;
    kmeans_buffers buf;

    __device__ int tiles() const { return (T + kmeans_tile - 1) / kmeans_tile; }
    __device__ const float* rows(int b) const { return x + static_cast<std::int64_t>(first + b) * T * a.g.d; }
    __device__ float* centroids(int b) const { return buf.centroids + static_cast<std::int64_t>(b) * k * a.g.d; }
    __device__ core::kmeans_params params(int b) const {
        const bool v = (first + b) / a.heads == 1;
        return {k,
                iterations,
                tolerance,
                seed,
                v ? core::stream_kmeans_init_v : core::stream_kmeans_init_k,
                v ? core::stream_empty_cluster_v : core::stream_empty_cluster_k,
                static_cast<std::uint64_t>((first + b) % a.heads)};
    }
    select_args init() const {
        return {buf.keys, problems, T, k, select_passes(T), buf.select, buf.digit_counts, buf.candidates, buf.chosen};
    }
};

/// The init keys, one token per thread; token 0 also starts its bank's state.
__global__ void kmeans_keys_kernel(kmeans_args p) {
    const std::int64_t idx = thread_index();
    if (idx >= static_cast<std::int64_t>(p.problems) * p.T) return;
    const int b = static_cast<int>(idx / p.T), t = static_cast<int>(idx % p.T);
    p.buf.keys[idx] = core::kmeans_init_key(p.params(b), t);
    if (t == 0) p.buf.state[b] = {};
}

/// The initial centroids, the chosen tokens' rows, one coordinate per thread.
__global__ void kmeans_seed_kernel(kmeans_args p) {
    const int d = p.a.g.d, per = p.k * d;
    const std::int64_t idx = thread_index();
    if (idx >= static_cast<std::int64_t>(p.problems) * per) return;
    const int b = static_cast<int>(idx / per), c = static_cast<int>(idx % per) / d, j = static_cast<int>(idx % d);
    p.buf.centroids[idx] = p.rows(b)[static_cast<std::int64_t>(p.buf.chosen[b * p.k + c]) * d + j];
}

/// Assignment, a block per tile of kmeans_tile tokens and a token per thread: the nearest centroid
/// (core::nearest_pattern_l2), the token's rank among the tile's earlier tokens of that cluster,
/// and the tile's count of every cluster.
__global__ void __launch_bounds__(kmeans_tile) kmeans_assign_kernel(kmeans_args p) {
    __shared__ int cluster[kmeans_tile];
    const int tiles = p.tiles(), b = static_cast<int>(blockIdx.x) / tiles, tile = static_cast<int>(blockIdx.x) % tiles;
    if (p.buf.state[b].stopped) return;  // the whole block, before any barrier
    const int i = static_cast<int>(threadIdx.x), t = tile * kmeans_tile + i, d = p.a.g.d;
    const std::int64_t token = static_cast<std::int64_t>(b) * p.T + t;
    const int c = t < p.T ? core::nearest_pattern_l2(p.rows(b) + static_cast<std::int64_t>(t) * d, p.centroids(b), p.k, d) : -1;
    cluster[i] = c;
    __syncthreads();
    if (c >= 0) {
        int rank = 0;
        for (int u = 0; u < i; ++u) rank += cluster[u] == c ? 1 : 0;
        p.buf.assign[token] = c;
        p.buf.tile_rank[token] = rank;
    }
    int* counts = p.buf.tile_counts + (static_cast<std::int64_t>(b) * tiles + tile) * p.k;
    for (int e = i; e < p.k; e += kmeans_tile) {
        int count = 0;
        for (int u = 0; u < kmeans_tile; ++u) count += cluster[u] == e ? 1 : 0;
        counts[e] = count;
    }
}

/// The member lists' ends, a block per bank and a thread per cluster: a tile's count becomes its
/// cluster's members in the earlier tiles (a running sum in tile order), and the clusters' totals
/// give the ends.
__global__ void __launch_bounds__(kmeans_tile) kmeans_ends_kernel(kmeans_args p) {
    __shared__ int totals[core::max_bank_patterns];
    const int b = static_cast<int>(blockIdx.x), tiles = p.tiles(), k = p.k;
    if (p.buf.state[b].stopped) return;
    for (int c = static_cast<int>(threadIdx.x); c < k; c += kmeans_tile) {
        int* counts = p.buf.tile_counts + static_cast<std::int64_t>(b) * tiles * k + c;
        int earlier = 0;
        for (int tile = 0; tile < tiles; ++tile) {
            const int count = counts[static_cast<std::int64_t>(tile) * k];
            counts[static_cast<std::int64_t>(tile) * k] = earlier;
            earlier += count;
        }
        totals[c] = earlier;
    }
    __syncthreads();
    for (int c = static_cast<int>(threadIdx.x); c < k; c += kmeans_tile) {
        int end = 0;
        for (int e = 0; e <= c; ++e) end += totals[e];
        p.buf.ends[b * k + c] = end;
    }
}

/// Member lists in token order, one token per thread: token t goes after its cluster's members in
/// the earlier tiles and in its tile before it.
__global__ void kmeans_place_kernel(kmeans_args p) {
    const std::int64_t idx = thread_index();
    if (idx >= static_cast<std::int64_t>(p.problems) * p.T) return;
    const int b = static_cast<int>(idx / p.T), t = static_cast<int>(idx % p.T);
    if (p.buf.state[b].stopped) return;
    const int c = p.buf.assign[idx];
    const int begin = c == 0 ? 0 : p.buf.ends[b * p.k + c - 1];
    const int earlier_tiles = p.buf.tile_counts[(static_cast<std::int64_t>(b) * p.tiles() + t / kmeans_tile) * p.k + c];
    p.buf.members[static_cast<std::int64_t>(b) * p.T + begin + earlier_tiles + p.buf.tile_rank[idx]] = t;
}

/// Centroid update, one (centroid, coordinate) per thread (core::kmeans_update_coordinate); the
/// bank's largest change by a warp fold, then an atomic max on its bits (non-negative floats order
/// like their bits).
__global__ void __launch_bounds__(kmeans_tile) kmeans_update_kernel(kmeans_args p, int iter) {
    const int d = p.a.g.d, per = p.k * d, blocks = (per + kmeans_tile - 1) / kmeans_tile;
    const int b = static_cast<int>(blockIdx.x) / blocks;
    if (p.buf.state[b].stopped) return;  // the whole block, before the folds
    const int i = static_cast<int>(blockIdx.x) % blocks * kmeans_tile + static_cast<int>(threadIdx.x);
    const float delta =
        i < per ? core::kmeans_update_coordinate(p.params(b), p.rows(b), p.T, d, p.buf.members + static_cast<std::int64_t>(b) * p.T,
                                                 p.buf.ends + b * p.k, iter, i / d, i % d, p.centroids(b) + i)
                : 0.0f;
    const float shift = gpu::lane_fold<gpu::fold_max>(delta);
    if (threadIdx.x % gpu::warp_lanes == 0) gpu::atomic_max(&p.buf.state[b].shift_bits, core::float_bits(shift));
}

/// The stop test after iteration `iter` (core::kmeans_iterate's), a bank per thread.
__global__ void kmeans_stop_kernel(kmeans_args p, int iter) {
    const std::int64_t b = thread_index();
    if (b >= p.problems) return;
    kmeans_state& s = p.buf.state[b];
    if (iter >= 1 && core::bits_float(s.shift_bits) <= p.tolerance) s.stopped = 1;
    s.shift_bits = 0;
}

/// The banks as fp16, one coordinate per thread.
__global__ void kmeans_banks_kernel(kmeans_args p) {
    const int per = p.k * p.a.g.d;
    const std::int64_t idx = thread_index();
    if (idx >= static_cast<std::int64_t>(p.problems) * per) return;
    const int bank = p.first + static_cast<int>(idx / per);
    p.a.bank(bank / p.a.heads == 1, p.seq, bank % p.a.heads)[idx % per] = core::float_to_half(core::round_to_half(p.buf.centroids[idx]));
}

/// k-means of p's banks (T > k), written to the cache as fp16.
inline void mine_banks(gpu::stream_t stream, const kmeans_args& p) {
    const int E = elementwise_threads, d = p.a.g.d;
    const std::int64_t tokens = static_cast<std::int64_t>(p.problems) * p.T, coordinates = static_cast<std::int64_t>(p.problems) * p.k * d;
    const unsigned tiles = gpu::blocks_for(p.T, kmeans_tile),
                   update_blocks = gpu::blocks_for(static_cast<std::int64_t>(p.k) * d, kmeans_tile);
    const unsigned banks = static_cast<unsigned>(p.problems);
    gpu::launch(stream, kmeans_keys_kernel, gpu::blocks_for(tokens, E), E, "kmeans_keys", p);
    select_smallest(stream, p.init());
    gpu::launch(stream, kmeans_seed_kernel, gpu::blocks_for(coordinates, E), E, "kmeans_seed", p);
    for (int iter = 0; iter < p.iterations; ++iter) {
        gpu::launch_with_barriers(stream, kmeans_assign_kernel, banks * tiles, kmeans_tile, 0, "kmeans_assign", p);
        gpu::launch_with_barriers(stream, kmeans_ends_kernel, banks, kmeans_tile, 0, "kmeans_ends", p);
        gpu::launch(stream, kmeans_place_kernel, gpu::blocks_for(tokens, E), E, "kmeans_place", p);
        gpu::launch_with_barriers(stream, kmeans_update_kernel, banks * update_blocks, kmeans_tile, 0, "kmeans_update", p, iter);
        if (iter + 1 < p.iterations) gpu::launch(stream, kmeans_stop_kernel, gpu::blocks_for(p.problems, E), E, "kmeans_stop", p, iter);
    }
    gpu::launch(stream, kmeans_banks_kernel, gpu::blocks_for(coordinates, E), E, "kmeans_banks", p);
}

/// mine_banks' scratch, grown by gpu::workspace to the largest prompt and bank count seen: no
/// malloc/free per prefill after that.
class kmeans_workspace {
public:
    kmeans_buffers bind(int problems, int T, int k, int d) {
        const std::size_t P = static_cast<std::size_t>(problems), tokens = P * T, clusters = P * k;
        const std::size_t tiles = (static_cast<std::size_t>(T) + kmeans_tile - 1) / kmeans_tile;
        return {gpu::workspace(centroids_, clusters * d),
                gpu::workspace(keys_, tokens),
                gpu::workspace(assign_, tokens),
                gpu::workspace(tile_rank_, tokens),
                gpu::workspace(tile_counts_, P * tiles * k),
                gpu::workspace(ends_, clusters),
                gpu::workspace(members_, tokens),
                gpu::workspace(state_, P),
                gpu::workspace(select_, P),
                gpu::workspace(digit_counts_, P * select_digits),
                gpu::workspace(candidates_, tokens),
                gpu::workspace(chosen_, clusters)};
    }

private:
    gpu::device_buffer<float> centroids_;
    gpu::device_buffer<std::uint64_t> keys_;
    gpu::device_buffer<int> assign_, tile_rank_, tile_counts_, ends_, members_, digit_counts_, candidates_, chosen_;
    gpu::device_buffer<kmeans_state> state_;
    gpu::device_buffer<select_state> select_;
};

}  // namespace patternkv::PKV_GPU_NS

#pragma once
// k-means steps for mining the initial pattern bank of one head (method.md section 4).
// Init: the k tokens whose counter hash is smallest; assignment by squared L2 (canonical order);
// centroid = member sum in token order / count; an empty cluster takes a hashed token.

#include <cstdint>

#include "hash.hpp"
#include "patterns.hpp"
#include "platform.hpp"

namespace patternkv::core {

/// Whether a prompt of `tokens` tokens takes its tokens themselves as its bank (rounded to fp16)
/// instead of mining k patterns by k-means: when it has no more than k.
PKV_HD constexpr bool bank_is_tokens(int tokens, int k) { return tokens <= k; }

/// Patterns k-means mines from a prompt of `tokens` tokens: num_patterns, or, with
/// tokens_per_pattern > 0, at most one per tokens_per_pattern tokens (rounded up), so the bank's
/// cost per element stays bounded on short prompts (config::tokens_per_pattern).
PKV_HD constexpr int mined_patterns(std::int64_t tokens, int num_patterns, int tokens_per_pattern) {
    if (tokens_per_pattern <= 0) return num_patterns;
    const std::int64_t by_length = (tokens + tokens_per_pattern - 1) / tokens_per_pattern;
    return by_length < num_patterns ? static_cast<int>(by_length) : num_patterns;
}

struct kmeans_params {
    int k;               ///< clusters (>= 1, <= tokens)
    int max_iterations;  ///< >= 1
    float tolerance;     ///< stop when the largest coordinate change is <= this (from iteration 2)
    std::uint64_t seed;
    std::uint64_t init_stream, empty_stream;  ///< hash streams (K and V differ)
    std::uint64_t head;                       ///< KV head index: part of every hash key
};

/// Writes to `chosen` the k token indices with the smallest counter_hash(seed, stream, head, t),
/// in increasing hash order (ties: lower token first). Insertion into a sorted list of k entries.
PKV_HD void kmeans_init_tokens(const kmeans_params& p, int tokens, int* chosen, std::uint64_t* keys) {
    int filled = 0;
    for (int t = 0; t < tokens; ++t) {
        const std::uint64_t h = counter_hash(p.seed, p.init_stream, p.head, static_cast<std::uint64_t>(t));
        if (filled == p.k && h >= keys[filled - 1]) continue;
        int pos = filled < p.k ? filled++ : p.k - 1;
        while (pos > 0 && keys[pos - 1] > h) {
            keys[pos] = keys[pos - 1];
            chosen[pos] = chosen[pos - 1];
            --pos;
        }
        keys[pos] = h;
        chosen[pos] = t;
    }
}

/// Token that refills empty cluster c at iteration `iter`.
PKV_HD int kmeans_empty_cluster_token(const kmeans_params& p, int tokens, int iter, int c) {
    const std::uint64_t h =
        counter_hash(p.seed, p.empty_stream, p.head, (static_cast<std::uint64_t>(iter) << 32) | static_cast<std::uint32_t>(c));
    return static_cast<int>(h % static_cast<std::uint64_t>(tokens));
}

/// Sets one centroid coordinate to sum / count (count > 0); returns the |change|.
PKV_HD float kmeans_set_coordinate(float sum, int count, float* centroid_j) {
    const float v = sum / static_cast<float>(count);
    const float delta = v > *centroid_j ? v - *centroid_j : *centroid_j - v;
    *centroid_j = v;
    return delta;
}

/// Sets coordinate j of a centroid to token t's (empty-cluster repair); returns the |change|.
PKV_HD float kmeans_reseed_coordinate(const float* x, int d, int t, int j, float* centroid_j) {
    const float v = x[t * d + j];
    const float delta = v > *centroid_j ? v - *centroid_j : *centroid_j - v;
    *centroid_j = v;
    return delta;
}

/// Replaces centroid c by token t (empty-cluster repair); returns the largest coordinate change.
PKV_HD float kmeans_reseed_centroid(const float* x, int d, int t, float* centroid) {
    float s = 0.0f;
    for (int j = 0; j < d; ++j) {
        const float delta = kmeans_reseed_coordinate(x, d, t, j, centroid + j);
        s = delta > s ? delta : s;
    }
    return s;
}

/// New centroids from the current assignment: each coordinate's member sum is one chain in token
/// order (one pass over the tokens), divided by the count; an empty cluster c takes token
/// kmeans_empty_cluster_token(p, tokens, iter, c). Scratch: sum [k][d], count [k].
/// Returns the largest |change| of a coordinate.
PKV_HD float kmeans_update_centroids(const kmeans_params& p, const float* x, int tokens, int d, const int* assign, int iter,
                                     float* centroids, float* sum, int* count) {
    for (int i = 0; i < p.k * d; ++i) sum[i] = 0.0f;
    for (int c = 0; c < p.k; ++c) count[c] = 0;
    for (int t = 0; t < tokens; ++t) {
        float* s = sum + assign[t] * d;
        const float* row = x + t * d;
        ++count[assign[t]];
        for (int j = 0; j < d; ++j) s[j] = s[j] + row[j];
    }
    float shift = 0.0f;
    for (int c = 0; c < p.k; ++c) {
        float s = 0.0f;
        if (count[c] == 0) {
            s = kmeans_reseed_centroid(x, d, kmeans_empty_cluster_token(p, tokens, iter, c), centroids + c * d);
        } else {
            for (int j = 0; j < d; ++j) {
                const float delta = kmeans_set_coordinate(sum[c * d + j], count[c], centroids + c * d + j);
                s = delta > s ? delta : s;
            }
        }
        shift = s > shift ? s : shift;
    }
    return shift;
}

/// Coordinate j of kmeans_update_centroids, for backends that give each (centroid, coordinate) its
/// own thread: the member sum of coordinate j is the same chain in token order, then the same
/// kmeans_set_coordinate. Returns the member count; *delta is the |change| (0 when empty).
PKV_HD int kmeans_update_coordinate(const float* x, int tokens, int d, const int* assign, int c, int j, float* centroid_j, float* delta) {
    int count = 0;
    float sum = 0.0f;
    for (int t = 0; t < tokens; ++t) {
        if (assign[t] != c) continue;
        ++count;
        sum = sum + x[t * d + j];
    }
    *delta = count > 0 ? kmeans_set_coordinate(sum, count, centroid_j) : 0.0f;
    return count;
}

/// The assignment step as the method defines it: every token to its nearest centroid by
/// Distance::nearest_l2 (squared L2 in the canonical lane order, ties to the lowest index).
/// Accelerated steps (reference/kmeans_bounds.hpp) must return the same assignment.
template <class Distance = scalar_distance>
struct full_assignment {
    PKV_HD void operator()(const float* x, int tokens, int d, const float* centroids, int k, int* assign) const {
        for (int t = 0; t < tokens; ++t) assign[t] = Distance::nearest_l2(x + t * d, centroids, k, d);
    }
};

/// Whole k-means on one head: x [tokens][d] (tokens >= k), centroids [k][d] out, the assignment
/// step supplied by the caller (called once per iteration with the current centroids).
/// Scratch: assign [tokens], chosen [k] ints (the initial tokens, then member counts), keys [k],
/// sum [k][d]. Sequential reference driver; a GPU
/// backend runs the same steps with the assignment and centroid loops spread over threads.
template <class Assignment>
PKV_HD void kmeans_iterate(const kmeans_params& p, const float* x, int tokens, int d, float* centroids, int* assign, int* chosen,
                           std::uint64_t* keys, float* sum, Assignment&& assignment) {
    kmeans_init_tokens(p, tokens, chosen, keys);
    for (int c = 0; c < p.k; ++c)
        for (int j = 0; j < d; ++j) centroids[c * d + j] = x[chosen[c] * d + j];
    for (int iter = 0; iter < p.max_iterations; ++iter) {
        assignment(x, tokens, d, centroids, p.k, assign);
        const float shift = kmeans_update_centroids(p, x, tokens, d, assign, iter, centroids, sum, chosen);
        if (iter >= 1 && shift <= p.tolerance) break;
    }
}

/// k-means with the defining assignment step (full_assignment<Distance>).
template <class Distance = scalar_distance>
PKV_HD void kmeans_run(const kmeans_params& p, const float* x, int tokens, int d, float* centroids, int* assign, int* chosen,
                       std::uint64_t* keys, float* sum) {
    kmeans_iterate(p, x, tokens, d, centroids, assign, chosen, keys, sum, full_assignment<Distance>{});
}

}  // namespace patternkv::core

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

/// The key that ranks token t for the init: the k tokens with the smallest keys start the centroids.
PKV_HD std::uint64_t kmeans_init_key(const kmeans_params& p, int t) {
    return counter_hash(p.seed, p.init_stream, p.head, static_cast<std::uint64_t>(t));
}

/// The init's order: increasing key, ties to the lower token.
PKV_HD bool kmeans_init_before(std::uint64_t key_a, int token_a, std::uint64_t key_b, int token_b) {
    return key_a < key_b || (key_a == key_b && token_a < token_b);
}

/// Writes to `chosen` the k token indices that come first in kmeans_init_before's order of
/// (kmeans_init_key(p, t), t), in that order. Insertion into a sorted list of k entries.
PKV_HD void kmeans_init_tokens(const kmeans_params& p, int tokens, int* chosen, std::uint64_t* keys) {
    int filled = 0;
    for (int t = 0; t < tokens; ++t) {
        const std::uint64_t h = kmeans_init_key(p, t);
        if (filled == p.k && !kmeans_init_before(h, t, keys[filled - 1], chosen[filled - 1])) continue;
        int pos = filled < p.k ? filled++ : p.k - 1;
        while (pos > 0 && kmeans_init_before(h, t, keys[pos - 1], chosen[pos - 1])) {
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

/// Adds coordinates [first, first + width) of the rows `members` (ascending tokens) to
/// sum[0 .. width): each coordinate's member sum is one chain in token order, however a backend
/// walks it (the CPU adds each token's row to its cluster's sums as it scans the tokens; a GPU
/// thread takes one coordinate over its cluster's member list).
PKV_HD void kmeans_member_sums(const float* x, int d, const int* members, int count, int first, int width, float* sum) {
    for (int i = 0; i < count; ++i) {
        const float* row = x + static_cast<std::int64_t>(members[i]) * d + first;
        for (int j = 0; j < width; ++j) sum[j] = sum[j] + row[j];
    }
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
        ++count[assign[t]];
        kmeans_member_sums(x, d, &t, 1, 0, d, sum + assign[t] * d);  // token t's row joins its cluster's chains
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

/// Cluster c's members in the layout of member lists a GPU builds (backends/gpu/kmeans_kernels.hpp):
/// every cluster's members ascending, cluster after cluster, cluster c's ending at ends[c]. Returns
/// the first and sets *count.
PKV_HD const int* kmeans_cluster_members(const int* members, const int* ends, int c, int* count) {
    const int begin = c == 0 ? 0 : ends[c - 1];
    *count = ends[c] - begin;
    return members + begin;
}

/// Coordinate j of centroid c in kmeans_update_centroids, from member lists (kmeans_cluster_members'
/// layout), for backends that give each (centroid, coordinate) its own thread: the same chain, the
/// same division or reseed. Returns the |change|.
PKV_HD float kmeans_update_coordinate(const kmeans_params& p, const float* x, int tokens, int d, const int* members, const int* ends,
                                      int iter, int c, int j, float* centroid_j) {
    int count = 0;
    const int* m = kmeans_cluster_members(members, ends, c, &count);
    if (count == 0) return kmeans_reseed_coordinate(x, d, kmeans_empty_cluster_token(p, tokens, iter, c), j, centroid_j);
    float sum = 0.0f;
    kmeans_member_sums(x, d, m, count, j, 1, &sum);
    return kmeans_set_coordinate(sum, count, centroid_j);
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
/// sum [k][d]. Sequential reference driver; a GPU backend runs the same steps with the init,
/// assignment and centroid update spread over threads (backends/gpu/kmeans_kernels.hpp).
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

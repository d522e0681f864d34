#pragma once
// Counter-based hashing: the only source of "randomness" in result paths, reproducible on every
// backend and independent of thread scheduling.

#include <cstdint>

#include "platform.hpp"

namespace patternkv::core {

/// SplitMix64 finaliser: a bijective 64-bit mixer.
PKV_HD std::uint64_t mix64(std::uint64_t z) {
    z += 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/// Hash of (seed, stream, a, b): each argument goes through the mixer so nearby counters decorrelate.
PKV_HD std::uint64_t counter_hash(std::uint64_t seed, std::uint64_t stream, std::uint64_t a, std::uint64_t b) {
    std::uint64_t h = mix64(seed);
    h = mix64(h ^ stream);
    h = mix64(h ^ a);
    return mix64(h ^ b);
}

/// Streams of counter_hash: which decision a hash value feeds.
enum hash_stream : std::uint64_t {
    stream_kmeans_init_k = 1,
    stream_kmeans_init_v = 2,
    stream_empty_cluster_k = 3,
    stream_empty_cluster_v = 4,
};

}  // namespace patternkv::core

#pragma once
// Well-written dense decode-attention baselines (fp32 and fp16 KV caches) and a dense causal
// prefill attention: the yardsticks the quantized cache is measured against. Same parallel
// decomposition as the library (sequence x KV head x split, the GQA group sharing K/V reads),
// AVX2/F16C/FMA when the CPU has them. Not bit-exact code: plain float math.
#include <cstdint>
#include <vector>

namespace pkv_bench {

struct dense_shape {
    int batch, kv_heads, q_heads, head_dim;
    std::int64_t tokens;
};

/// A dense cache [batch][kv_heads][tokens][head_dim] of K and V, fp32 or fp16.
struct dense_cache {
    dense_shape shape;
    bool half;
    std::vector<float> k32, v32;
    std::vector<std::uint16_t> k16, v16;
    std::uint64_t bytes() const;
};

/// Fills a dense cache with deterministic pseudo-random values in [-2, 2).
dense_cache make_dense_cache(const dense_shape& s, bool half, std::uint64_t seed);

/// Decode attention: q [batch][q_heads][head_dim] -> out, same layout.
void dense_decode_attention(const dense_cache& c, const float* q, float* out);

/// Causal self-attention of a prompt: q [tokens][q_heads][d], k, v [tokens][kv_heads][d] -> out.
void dense_prefill_attention(int tokens, int q_heads, int kv_heads, int d, const float* q, const float* k, const float* v, float* out);

/// Largest relative error of dense_decode_attention against a double-precision evaluation on a
/// small cache (batch 2, 2 KV heads, GQA 4, 1500 tokens): the baselines' self-check.
double dense_baseline_error(bool half);

/// Single-precision FMA throughput of all hardware threads (FMAs/s; 0 without AVX2/FMA): the
/// compute roof that decode attention (one FMA per cached element per query head) runs into.
double fma_peak();

/// Read bandwidth in bytes/s: parallel sum over a buffer much larger than the caches (best of runs).
double stream_read_bandwidth(std::size_t bytes, int reps);

}  // namespace pkv_bench

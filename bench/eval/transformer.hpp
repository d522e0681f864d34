#pragma once
/// @file transformer.hpp
/// The Llama / Gemma 3 forward pass: a full-precision causal prefill and a batched decode step whose attention
/// is delegated to the caller (one KV cache per sequence and layer).

#include <functional>
#include <span>
#include <vector>

#include "model.hpp"

namespace pkveval {

class transformer {
public:
    explicit transformer(const model& m);

    /// Result of prefill: post-RoPE keys and values of every layer, and logits.
    struct prefill_result {
        std::vector<std::vector<float>> k;  ///< per layer [tokens][n_kv_heads][head_dim]
        std::vector<std::vector<float>> v;  ///< per layer [tokens][n_kv_heads][head_dim]
        std::vector<float> logits;          ///< [tokens - logits_from][vocab]: rows logits_from .. tokens-1
    };
    /// Runs `tokens` at positions 0..T-1 with exact causal attention in fp32 (sliding-window layers
    /// see their window only).
    /// Logits of rows logits_from .. T-1 only (T - 1: the last token's; 0: every row).
    prefill_result prefill(std::span<const int> tokens, int logits_from) const;

    /// Attention of one layer for a batch of B sequences, each one new token:
    /// q [B][n_heads][head_dim], k and v [B][n_kv_heads][head_dim] (post-RoPE), out [B][n_heads][head_dim].
    using attention_fn = std::function<void(int layer, const float* q, const float* k, const float* v, float* out)>;
    /// One decode step: tokens[b] at position `pos` for every sequence b; logits [B][vocab].
    void decode(std::span<const int> tokens, int pos, const attention_fn& attend, float* logits) const;

    const model& net() const { return m_; }

private:
    /// The layer stack over rows x [B][dim]; `attend` gets each layer's q, k, v.
    void layers(std::vector<float>& x, int batch, std::span<const int> positions, const attention_fn& attend) const;
    void rope(float* x, int heads, int pos, int layer) const;
    /// Scaled embeddings of `tokens` into x [tokens][dim]; throws for ids outside the vocabulary.
    void embed(std::span<const int> tokens, std::vector<float>& x) const;
    float gate(float g) const;
    /// x += post_norm(block_out) (no norm when post_norm is empty); block_out is overwritten.
    void add_residual(std::vector<float>& x, std::vector<float>& block_out, const std::vector<float>& post_norm, int batch) const;
    void logits(const std::vector<float>& x, int first_row, int rows, float* out) const;

    const model& m_;
    std::vector<double> inv_freq_, inv_freq_local_;  ///< [head_dim / 2] of global and sliding-window layers
};

}  // namespace pkveval

#pragma once
/// @file model.hpp
/// A Llama-family model in fp32: shape, weights and its tokenizer.

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "tokenizer.hpp"

namespace pkveval {

/// How RoPE pairs the channels of a head: llama2.c and GGUF llama rotate (2i, 2i+1); GGUF
/// gemma3 (llama.cpp's "neox" mode) rotates (i, i + head_dim/2).
enum class rope_pairs { interleaved, halves };

/// The gate of the gated feed-forward block: SwiGLU (Llama) or GeGLU with tanh-approximated GELU (Gemma).
enum class ffn_gate { silu, gelu_tanh };

/// Shape and hyper-parameters of a Llama-family decoder (Llama, or Gemma 3 with its extra norms,
/// QK-norm, GeGLU and sliding-window layers).
struct model_config {
    int dim = 0;         ///< residual stream width
    int hidden_dim = 0;  ///< SwiGLU inner width
    int n_layers = 0;
    int n_heads = 0;     ///< query heads
    int n_kv_heads = 0;  ///< KV heads (GQA)
    int head_dim = 0;
    int vocab_size = 0;
    int max_seq_len = 0;  ///< context length the model was trained for
    float rope_base = 10000.0f;
    float rms_eps = 1e-5f;
    rope_pairs rope = rope_pairs::interleaved;
    ffn_gate gate = ffn_gate::silu;
    float embed_scale = 1.0f;  ///< token embeddings are multiplied by this (Gemma: sqrt(dim))
    /// Sliding-window ("local") layers: a query at position p sees keys p-W+1..p (W = sliding_window)
    /// and rotates with rope_base_local. Empty: every layer is global.
    std::vector<char> layer_is_local;
    int sliding_window = 0;
    float rope_base_local = 10000.0f;

    int q_dim() const { return n_heads * head_dim; }
    int kv_dim() const { return n_kv_heads * head_dim; }
    bool is_local(int layer) const { return !layer_is_local.empty() && layer_is_local[layer] != 0; }
    /// First key position a query at `pos` attends to in `layer`.
    int first_visible(int layer, int pos) const { return is_local(layer) ? std::max(0, pos - sliding_window + 1) : 0; }
    int local_layers() const { return static_cast<int>(std::count(layer_is_local.begin(), layer_is_local.end(), 1)); }
};

/// Weights of one decoder layer; matrices are row-major [out][in].
struct layer_weights {
    std::vector<float> attn_norm;  ///< [dim]
    std::vector<float> wq;         ///< [q_dim][dim]
    std::vector<float> wk;         ///< [kv_dim][dim]
    std::vector<float> wv;         ///< [kv_dim][dim]
    std::vector<float> wo;         ///< [dim][q_dim]
    std::vector<float> ffn_norm;   ///< [dim]
    std::vector<float> w_gate;     ///< [hidden][dim]  (llama2.c w1)
    std::vector<float> w_down;     ///< [dim][hidden]  (llama2.c w2)
    std::vector<float> w_up;       ///< [hidden][dim]  (llama2.c w3)
    // Gemma 3 only (empty otherwise)
    std::vector<float> q_norm, k_norm;                 ///< [head_dim] RMSNorm of each q and k head before RoPE
    std::vector<float> post_attn_norm, post_ffn_norm;  ///< [dim] RMSNorm of each block's output before the residual add
};

/// A loaded model. RoPE rotates channel pair i (see rope_pairs) by pos * base^(-2i/head_dim).
struct model {
    std::string name;
    model_config cfg;
    std::vector<float> token_embd;  ///< [vocab][dim]
    std::vector<layer_weights> layers;
    std::vector<float> final_norm;  ///< [dim]
    std::vector<float> output;      ///< [vocab][dim]; empty when tied to token_embd
    std::unique_ptr<tokenizer> tok;

    const float* classifier() const { return output.empty() ? token_embd.data() : output.data(); }
};

/// Loads a llama2.c legacy .bin checkpoint and its tokenizer.bin.
model load_llama2c(const std::string& path, const std::string& tokenizer_path);
/// Loads a GGUF (v2/v3) model of architecture llama or gemma3 with its tokenizer.
model load_gguf(const std::string& path);
/// Just the tokenizer of a GGUF file (tokenizer.ggml.*).
std::unique_ptr<tokenizer> load_gguf_tokenizer(const std::string& path);
/// Chooses by content: GGUF magic, else llama2.c (which needs `tokenizer_path`).
model load_model(const std::string& path, const std::string& tokenizer_path);

}  // namespace pkveval

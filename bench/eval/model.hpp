#pragma once
/// @file model.hpp
/// A Llama-family model in fp32: shape, weights and its tokenizer.

#include <memory>
#include <string>
#include <vector>

#include "tokenizer.hpp"

namespace pkveval {

/// Shape and hyper-parameters of a Llama-family decoder.
struct model_config {
    int dim = 0;          ///< residual stream width
    int hidden_dim = 0;   ///< SwiGLU inner width
    int n_layers = 0;
    int n_heads = 0;      ///< query heads
    int n_kv_heads = 0;   ///< KV heads (GQA)
    int head_dim = 0;
    int vocab_size = 0;
    int max_seq_len = 0;  ///< context length the model was trained for
    float rope_base = 10000.0f;
    float rms_eps = 1e-5f;

    int q_dim() const { return n_heads * head_dim; }
    int kv_dim() const { return n_kv_heads * head_dim; }
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
};

/// A loaded model. RoPE rotates interleaved pairs (2i, 2i+1) with frequency base^(-2i/head_dim)
/// (llama2.c; GGUF llama tensors are permuted by the converter into this layout).
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
/// Loads a GGUF (v2/v3) llama-architecture model with its byte-level BPE tokenizer.
model load_gguf(const std::string& path);
/// Just the tokenizer of a GGUF file (tokenizer.ggml.*).
std::unique_ptr<tokenizer> load_gguf_tokenizer(const std::string& path);
/// Chooses by content: GGUF magic, else llama2.c (which needs `tokenizer_path`).
model load_model(const std::string& path, const std::string& tokenizer_path);

} // namespace pkveval

/// @file gguf_model.cpp
/// Builds a fp32 `model` from a GGUF llama- or gemma3-architecture file: hyper-parameters from
/// `<arch>.*` metadata, weights dequantized once at load, tokenizer from `tokenizer.ggml.*`.

#include <cmath>
#include <filesystem>

#include <fmt/format.h>
#include <tbb/parallel_for.h>

#include "eval_error.hpp"
#include "gguf_reader.hpp"
#include "gguf_tokenizer.hpp"
#include "model.hpp"

namespace pkveval {
namespace {

/// Dequantizes tensor `name`, checking it has exactly the expected [rows][cols] shape
/// (GGUF dims = {cols, rows}).
std::vector<float> load_matrix(const gguf_file& g, const std::string& name, std::uint64_t rows, std::uint64_t cols) {
    const gguf_tensor_info* t = g.find_tensor(name);
    if (t == nullptr) throw eval_error(fmt::format("GGUF tensor '{}' is missing", name));
    const bool ok =
        (rows == 1 && t->dims.size() == 1 && t->dims[0] == cols) || (t->dims.size() == 2 && t->dims[0] == cols && t->dims[1] == rows);
    if (!ok) {
        std::string dims;
        for (auto d : t->dims) dims += fmt::format("{} ", d);
        throw eval_error(fmt::format("GGUF tensor '{}' has dims [{}], expected [{} {}]", name, dims, cols, rows));
    }
    const auto bytes = g.tensor_bytes(*t);
    std::vector<float> out(rows * cols);
    const std::uint64_t row_bytes = ggml_type_bytes(t->type, cols);
    if (row_bytes == 0)
        throw eval_error(fmt::format("GGUF tensor '{}': rows of {} are not whole {} blocks", name, cols, ggml_type_name(t->type)));
    tbb::parallel_for(std::uint64_t{0}, rows,
                      [&](std::uint64_t r) { dequantize(t->type, bytes.subspan(r * row_bytes, row_bytes), cols, out.data() + r * cols); });
    return out;
}

int meta_int(const gguf_file& g, const std::string& key, double lo, double hi) {
    const double v = g.number(key);
    if (!(v >= lo && v <= hi)) throw eval_error(fmt::format("GGUF metadata {} = {} is out of range", key, v));
    return static_cast<int>(v);
}

}  // namespace

model load_gguf(const std::string& path) {
    const gguf_file g = gguf_file::load(path);
    const std::string arch = g.string("general.architecture");
    if (arch != "llama" && arch != "gemma3")
        throw eval_error(fmt::format("GGUF architecture '{}' is not supported (supported: llama, gemma3)", arch));
    const bool gemma = arch == "gemma3";
    const auto key = [&](const char* k) { return arch + "." + k; };
    model m;
    model_config& c = m.cfg;
    c.dim = meta_int(g, key("embedding_length"), 1, 1 << 16);
    c.hidden_dim = meta_int(g, key("feed_forward_length"), 1, 1 << 18);
    c.n_layers = meta_int(g, key("block_count"), 1, 1024);
    c.n_heads = meta_int(g, key("attention.head_count"), 1, 1024);
    c.n_kv_heads = g.has(key("attention.head_count_kv")) ? meta_int(g, key("attention.head_count_kv"), 1, 1024) : c.n_heads;
    c.max_seq_len = meta_int(g, key("context_length"), 1, 1 << 24);
    c.rope_base = static_cast<float>(g.number_or(key("rope.freq_base"), 10000.0));
    c.rms_eps = static_cast<float>(g.number_or(key("attention.layer_norm_rms_epsilon"), 1e-5));
    if (c.n_heads % c.n_kv_heads != 0)
        throw eval_error(fmt::format("GGUF query heads ({}) are not a multiple of the KV heads ({})", c.n_heads, c.n_kv_heads));
    c.head_dim = g.has(key("attention.key_length")) ? meta_int(g, key("attention.key_length"), 2, 1 << 12) : c.dim / c.n_heads;
    if (!g.has(key("attention.key_length")) && c.dim % c.n_heads != 0)
        throw eval_error(fmt::format("GGUF heads ({}) do not divide the width {}", c.n_heads, c.dim));
    if (g.has(key("attention.value_length")) && g.number(key("attention.value_length")) != c.head_dim)
        throw eval_error("GGUF attention.value_length differs from key_length: not supported");
    if (g.has(key("rope.dimension_count")) && g.number(key("rope.dimension_count")) != c.head_dim)
        throw eval_error("GGUF partial RoPE (rope.dimension_count != head_dim) is not supported");
    if (g.has(key("rope.scaling.type")) && g.string(key("rope.scaling.type")) != "none")
        throw eval_error(fmt::format("GGUF RoPE scaling '{}' is not supported", g.string(key("rope.scaling.type"))));
    if (g.has(key("attn_logit_softcapping")) || g.has(key("final_logit_softcapping")))
        throw eval_error("GGUF logit soft-capping (Gemma 2) is not supported");
    if (gemma) {
        // llama.cpp's gemma3: un-permuted q/k (RoPE on halves), GeGLU, embeddings scaled by sqrt(dim),
        // every sixth layer global and the others sliding-window with RoPE base 10000
        c.rope = rope_pairs::halves;
        c.gate = ffn_gate::gelu_tanh;
        c.embed_scale = std::sqrt(static_cast<float>(c.dim));
        c.sliding_window = meta_int(g, key("attention.sliding_window"), 1, 1 << 24);
        const int period =
            g.has(key("attention.sliding_window_pattern")) ? meta_int(g, key("attention.sliding_window_pattern"), 1, 1024) : 6;
        c.rope_base_local = static_cast<float>(g.number_or(key("rope.freq_base_swa"), 10000.0));
        c.layer_is_local.resize(c.n_layers);
        for (int l = 0; l < c.n_layers; ++l) c.layer_is_local[l] = (l + 1) % period != 0;
    }

    m.tok = make_gguf_tokenizer(g);
    c.vocab_size = m.tok->vocab_size();
    const std::uint64_t D = c.dim, H = c.hidden_dim, Q = c.q_dim(), KV = c.kv_dim(), V = c.vocab_size, HD = c.head_dim;
    m.token_embd = load_matrix(g, "token_embd.weight", V, D);
    m.layers.resize(c.n_layers);
    for (int i = 0; i < c.n_layers; ++i) {
        const std::string p = fmt::format("blk.{}.", i);
        layer_weights& l = m.layers[i];
        l.attn_norm = load_matrix(g, p + "attn_norm.weight", 1, D);
        l.wq = load_matrix(g, p + "attn_q.weight", Q, D);
        l.wk = load_matrix(g, p + "attn_k.weight", KV, D);
        l.wv = load_matrix(g, p + "attn_v.weight", KV, D);
        l.wo = load_matrix(g, p + "attn_output.weight", D, Q);
        l.ffn_norm = load_matrix(g, p + "ffn_norm.weight", 1, D);
        l.w_gate = load_matrix(g, p + "ffn_gate.weight", H, D);
        l.w_down = load_matrix(g, p + "ffn_down.weight", D, H);
        l.w_up = load_matrix(g, p + "ffn_up.weight", H, D);
        if (gemma) {  // the converter stores Gemma's RMSNorm weights as 1 + w: plain multipliers here
            l.q_norm = load_matrix(g, p + "attn_q_norm.weight", 1, HD);
            l.k_norm = load_matrix(g, p + "attn_k_norm.weight", 1, HD);
            l.post_attn_norm = load_matrix(g, p + "post_attention_norm.weight", 1, D);
            l.post_ffn_norm = load_matrix(g, p + "post_ffw_norm.weight", 1, D);
        }
    }
    m.final_norm = load_matrix(g, "output_norm.weight", 1, D);
    if (g.find_tensor("output.weight") != nullptr) m.output = load_matrix(g, "output.weight", V, D);  // else tied
    m.name = g.has("general.name") ? g.string("general.name") : std::filesystem::path(path).filename().string();
    return m;
}

}  // namespace pkveval

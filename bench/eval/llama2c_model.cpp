/// @file llama2c_model.cpp
/// llama2.c legacy checkpoints: 7 int32 header fields, then fp32 weights in the order of run.c's
/// memory_map_weights. The file size must match the header exactly (with or without a separate
/// classifier), which catches truncated and foreign files before any weight is read.

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>

#include <fmt/format.h>

#include "eval_error.hpp"
#include "gguf_reader.hpp"
#include "model.hpp"

namespace pkveval {

model load_llama2c(const std::string& path, const std::string& tokenizer_path) {
    std::ifstream f(path, std::ios::binary | std::ios::ate);
    if (!f) throw eval_error(fmt::format("cannot open model file '{}'", path));
    const auto file_size = static_cast<std::uint64_t>(f.tellg());
    f.seekg(0);
    std::int32_t h[7] = {};
    if (file_size < sizeof h || !f.read(reinterpret_cast<char*>(h), sizeof h))
        throw eval_error(fmt::format("'{}' is too short to be a llama2.c checkpoint", path));
    model m;
    model_config& c = m.cfg;
    c.dim = h[0];
    c.hidden_dim = h[1];
    c.n_layers = h[2];
    c.n_heads = h[3];
    c.n_kv_heads = h[4];
    const bool shared = h[5] > 0;
    c.vocab_size = h[5] < 0 ? -h[5] : h[5];
    c.max_seq_len = h[6];
    const auto bad = [&](const char* why) {
        return eval_error(fmt::format("'{}' is not a valid llama2.c checkpoint: {} (header {} {} {} {} {} {} {})", path, why, h[0], h[1],
                                      h[2], h[3], h[4], h[5], h[6]));
    };
    if (c.dim <= 0 || c.dim > 65536 || c.hidden_dim <= 0 || c.hidden_dim > 262144 || c.n_layers <= 0 || c.n_layers > 1024 ||
        c.n_heads <= 0 || c.n_kv_heads <= 0 || c.vocab_size <= 0 || c.vocab_size > 1 << 20 || c.max_seq_len <= 0 || c.max_seq_len > 1 << 20)
        throw bad("header values out of range");
    if (c.dim % c.n_heads != 0 || c.n_heads % c.n_kv_heads != 0) throw bad("heads do not divide the width");
    c.head_dim = c.dim / c.n_heads;
    if (c.head_dim % 2 != 0) throw bad("odd head_dim");
    c.rope_base = 10000.0f;
    c.rms_eps = 1e-5f;

    const std::uint64_t D = c.dim, H = c.hidden_dim, L = c.n_layers, V = c.vocab_size, KV = c.kv_dim();
    std::uint64_t floats = V * D + L * D + L * D * D + 2 * L * KV * D + L * D * D + L * D + 3 * L * H * D + D +
                           static_cast<std::uint64_t>(c.max_seq_len) * c.head_dim;  // freq_cis real + imag
    if (!shared) floats += V * D;
    if (file_size != sizeof h + 4 * floats)
        throw bad(fmt::format("file is {} bytes, the header implies {}", file_size, sizeof h + 4 * floats).c_str());

    auto take = [&](std::vector<float>& dst, std::uint64_t n) {
        dst.resize(n);
        if (!f.read(reinterpret_cast<char*>(dst.data()), static_cast<std::streamsize>(4 * n))) throw bad("short read");
    };
    take(m.token_embd, V * D);
    m.layers.resize(L);
    // run.c stores each weight kind for all layers together
    for (auto& l : m.layers) take(l.attn_norm, D);
    for (auto& l : m.layers) take(l.wq, D * D);
    for (auto& l : m.layers) take(l.wk, KV * D);
    for (auto& l : m.layers) take(l.wv, KV * D);
    for (auto& l : m.layers) take(l.wo, D * D);
    for (auto& l : m.layers) take(l.ffn_norm, D);
    for (auto& l : m.layers) take(l.w_gate, H * D);
    for (auto& l : m.layers) take(l.w_down, D * H);
    for (auto& l : m.layers) take(l.w_up, H * D);
    take(m.final_norm, D);
    std::vector<float> freq;
    take(freq, static_cast<std::uint64_t>(c.max_seq_len) * c.head_dim);  // legacy RoPE tables: recomputed instead
    if (!shared) take(m.output, V * D);
    m.name = std::filesystem::path(path).filename().string();
    if (tokenizer_path.empty())
        throw eval_error(fmt::format("'{}' is a llama2.c checkpoint: pass its tokenizer with --tokenizer (e.g. tok512.bin)", path));
    m.tok = load_llama2c_tokenizer(tokenizer_path, c.vocab_size);
    return m;
}

model load_model(const std::string& path, const std::string& tokenizer_path) {
    std::ifstream f(path, std::ios::binary);
    if (!f) throw eval_error(fmt::format("cannot open model file '{}'", path));
    char magic[4] = {};
    f.read(magic, 4);
    if (f.gcount() == 4 && std::memcmp(magic, "GGUF", 4) == 0) return load_gguf(path);
    return load_llama2c(path, tokenizer_path);
}

}  // namespace pkveval

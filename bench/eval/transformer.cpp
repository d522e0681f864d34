/// @file transformer.cpp
/// RMSNorm -> attention -> [RMSNorm] -> residual -> RMSNorm -> SwiGLU/GeGLU -> [RMSNorm] -> residual,
/// per layer, for B rows at once, so each weight matrix is read once per step whatever B is. The
/// bracketed norms, QK-norm and sliding windows are Gemma 3's (empty weights skip them).

#include "transformer.hpp"

#include <cmath>

#include <fmt/format.h>
#include <tbb/parallel_for.h>

#include "eval_error.hpp"
#include "matvec.hpp"

namespace pkveval {
namespace {

void rmsnorm_rows(const float* x, const float* w, int rows, int dim, float eps, float* out) {
    for (int r = 0; r < rows; ++r) {
        const float* xr = x + static_cast<std::size_t>(r) * dim;
        float* o = out + static_cast<std::size_t>(r) * dim;
        double ss = 0.0;
        for (int i = 0; i < dim; ++i) ss += static_cast<double>(xr[i]) * xr[i];
        const float inv = static_cast<float>(1.0 / std::sqrt(ss / dim + eps));
        for (int i = 0; i < dim; ++i) o[i] = w[i] * (inv * xr[i]);
    }
}

}  // namespace

transformer::transformer(const model& m) : m_(m) {
    const int hd = m.cfg.head_dim;
    for (int i = 0; i < hd / 2; ++i) {
        inv_freq_.push_back(std::pow(static_cast<double>(m.cfg.rope_base), -2.0 * i / hd));
        inv_freq_local_.push_back(std::pow(static_cast<double>(m.cfg.rope_base_local), -2.0 * i / hd));
    }
}

void transformer::rope(float* x, int heads, int pos, int layer) const {
    const int hd = m_.cfg.head_dim;
    const std::vector<double>& freq = m_.cfg.is_local(layer) ? inv_freq_local_ : inv_freq_;
    // the pair partner of channel i: i + 1 (interleaved) or i + hd/2 (halves)
    const bool halves = m_.cfg.rope == rope_pairs::halves;
    for (int i = 0; i < hd / 2; ++i) {
        const double a = pos * freq[i];
        const float c = static_cast<float>(std::cos(a)), s = static_cast<float>(std::sin(a));
        const int c0 = halves ? i : 2 * i, c1 = halves ? i + hd / 2 : 2 * i + 1;
        for (int h = 0; h < heads; ++h) {
            float* p = x + h * hd;
            const float x0 = p[c0], x1 = p[c1];
            p[c0] = x0 * c - x1 * s;
            p[c1] = x0 * s + x1 * c;
        }
    }
}

void transformer::embed(std::span<const int> tokens, std::vector<float>& x) const {
    const model_config& c = m_.cfg;
    x.resize(tokens.size() * static_cast<std::size_t>(c.dim));
    for (std::size_t t = 0; t < tokens.size(); ++t) {
        if (tokens[t] < 0 || tokens[t] >= c.vocab_size) throw eval_error(fmt::format("token id {} out of range", tokens[t]));
        const float* e = m_.token_embd.data() + static_cast<std::size_t>(tokens[t]) * c.dim;
        for (int i = 0; i < c.dim; ++i) x[t * c.dim + i] = e[i] * c.embed_scale;
    }
}

void transformer::layers(std::vector<float>& x, int batch, std::span<const int> positions, const attention_fn& attend) const {
    const model_config& c = m_.cfg;
    const std::size_t B = batch, D = c.dim, Q = c.q_dim(), KV = c.kv_dim(), H = c.hidden_dim;
    std::vector<float> xb(B * D), q(B * Q), k(B * KV), v(B * KV), att(B * Q), tmp(B * D), g(B * H), u(B * H);
    for (int l = 0; l < c.n_layers; ++l) {
        const layer_weights& w = m_.layers[l];
        rmsnorm_rows(x.data(), w.attn_norm.data(), batch, c.dim, c.rms_eps, xb.data());
        matmul(w.wq.data(), c.q_dim(), c.dim, xb.data(), batch, q.data());
        matmul(w.wk.data(), c.kv_dim(), c.dim, xb.data(), batch, k.data());
        matmul(w.wv.data(), c.kv_dim(), c.dim, xb.data(), batch, v.data());
        tbb::parallel_for(0, batch, [&](int b) {
            float* qb = q.data() + b * Q;
            float* kb = k.data() + b * KV;
            if (!w.q_norm.empty()) rmsnorm_rows(qb, w.q_norm.data(), c.n_heads, c.head_dim, c.rms_eps, qb);
            if (!w.k_norm.empty()) rmsnorm_rows(kb, w.k_norm.data(), c.n_kv_heads, c.head_dim, c.rms_eps, kb);
            rope(qb, c.n_heads, positions[b], l);
            rope(kb, c.n_kv_heads, positions[b], l);
        });
        attend(l, q.data(), k.data(), v.data(), att.data());
        matmul(w.wo.data(), c.dim, c.q_dim(), att.data(), batch, tmp.data());
        add_residual(x, tmp, w.post_attn_norm, batch);
        rmsnorm_rows(x.data(), w.ffn_norm.data(), batch, c.dim, c.rms_eps, xb.data());
        matmul(w.w_gate.data(), c.hidden_dim, c.dim, xb.data(), batch, g.data());
        matmul(w.w_up.data(), c.hidden_dim, c.dim, xb.data(), batch, u.data());
        for (std::size_t i = 0; i < B * H; ++i) g[i] = gate(g[i]) * u[i];
        matmul(w.w_down.data(), c.dim, c.hidden_dim, g.data(), batch, tmp.data());
        add_residual(x, tmp, w.post_ffn_norm, batch);
    }
}

float transformer::gate(float g) const {
    if (m_.cfg.gate == ffn_gate::silu) return g / (1.0f + std::exp(-g));
    const float inner = 0.7978845608f * (g + 0.044715f * g * g * g);  // sqrt(2/pi) (x + 0.044715 x^3)
    return 0.5f * g * (1.0f + std::tanh(inner));
}

void transformer::add_residual(std::vector<float>& x, std::vector<float>& block_out, const std::vector<float>& post_norm, int batch) const {
    const model_config& c = m_.cfg;
    if (!post_norm.empty()) rmsnorm_rows(block_out.data(), post_norm.data(), batch, c.dim, c.rms_eps, block_out.data());
    for (std::size_t i = 0; i < static_cast<std::size_t>(batch) * c.dim; ++i) x[i] += block_out[i];
}

void transformer::logits(const std::vector<float>& x, int first_row, int rows, float* out) const {
    const model_config& c = m_.cfg;
    std::vector<float> xb(static_cast<std::size_t>(rows) * c.dim);
    rmsnorm_rows(x.data() + static_cast<std::size_t>(first_row) * c.dim, m_.final_norm.data(), rows, c.dim, c.rms_eps, xb.data());
    matmul(m_.classifier(), c.vocab_size, c.dim, xb.data(), rows, out);
}

transformer::prefill_result transformer::prefill(std::span<const int> tokens, int logits_from) const {
    const model_config& c = m_.cfg;
    const int T = static_cast<int>(tokens.size());
    if (T == 0) throw eval_error("prefill needs at least one token");
    prefill_result r;
    r.k.resize(c.n_layers);
    r.v.resize(c.n_layers);
    std::vector<float> x;
    embed(tokens, x);
    std::vector<int> pos(T);
    for (int t = 0; t < T; ++t) pos[t] = t;
    const int hd = c.head_dim, group = c.n_heads / c.n_kv_heads, KV = c.kv_dim(), Q = c.q_dim();
    const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
    auto causal = [&](int layer, const float* q, const float* k, const float* v, float* out) {
        r.k[layer].assign(k, k + static_cast<std::size_t>(T) * KV);
        r.v[layer].assign(v, v + static_cast<std::size_t>(T) * KV);
        tbb::parallel_for(0, T * c.n_heads, [&](int i) {
            thread_local std::vector<float> scratch;
            scratch.resize(T);
            const int t = i / c.n_heads, h = i % c.n_heads, kvh = h / group;
            attend_exact(q + static_cast<std::size_t>(t) * Q + h * hd, k + kvh * hd, v + kvh * hd, c.first_visible(layer, t), t + 1, KV, hd,
                         scale, scratch.data(), out + static_cast<std::size_t>(t) * Q + h * hd);
        });
    };
    layers(x, T, pos, causal);
    if (logits_from < 0 || logits_from >= T) throw eval_error(fmt::format("prefill: logits from row {} of {}", logits_from, T));
    r.logits.resize(static_cast<std::size_t>(T - logits_from) * c.vocab_size);
    logits(x, logits_from, T - logits_from, r.logits.data());
    return r;
}

void transformer::decode(std::span<const int> tokens, int pos, const attention_fn& attend, float* out) const {
    const int B = static_cast<int>(tokens.size());
    std::vector<float> x;
    embed(tokens, x);
    const std::vector<int> positions(B, pos);
    layers(x, B, positions, attend);
    logits(x, 0, B, out);
}

}  // namespace pkveval

/// @file transformer.cpp
/// RMSNorm -> attention -> residual -> RMSNorm -> SwiGLU -> residual, per layer, for B rows at once,
/// so each weight matrix is read once per step whatever B is.

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

} // namespace

transformer::transformer(const model& m) : m_(m) {
    const int hd = m.cfg.head_dim;
    for (int i = 0; i < hd / 2; ++i) inv_freq_.push_back(std::pow(static_cast<double>(m.cfg.rope_base), -2.0 * i / hd));
}

void transformer::rope(float* x, int heads, int pos) const {
    const int hd = m_.cfg.head_dim;
    for (int i = 0; i < hd / 2; ++i) {
        const double a = pos * inv_freq_[i];
        const float c = static_cast<float>(std::cos(a)), s = static_cast<float>(std::sin(a));
        for (int h = 0; h < heads; ++h) {
            float* p = x + h * hd + 2 * i;
            const float x0 = p[0], x1 = p[1];
            p[0] = x0 * c - x1 * s;
            p[1] = x0 * s + x1 * c;
        }
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
            rope(q.data() + b * Q, c.n_heads, positions[b]);
            rope(k.data() + b * KV, c.n_kv_heads, positions[b]);
        });
        attend(l, q.data(), k.data(), v.data(), att.data());
        matmul(w.wo.data(), c.dim, c.q_dim(), att.data(), batch, tmp.data());
        for (std::size_t i = 0; i < B * D; ++i) x[i] += tmp[i];
        rmsnorm_rows(x.data(), w.ffn_norm.data(), batch, c.dim, c.rms_eps, xb.data());
        matmul(w.w_gate.data(), c.hidden_dim, c.dim, xb.data(), batch, g.data());
        matmul(w.w_up.data(), c.hidden_dim, c.dim, xb.data(), batch, u.data());
        for (std::size_t i = 0; i < B * H; ++i) g[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];
        matmul(w.w_down.data(), c.dim, c.hidden_dim, g.data(), batch, tmp.data());
        for (std::size_t i = 0; i < B * D; ++i) x[i] += tmp[i];
    }
}

void transformer::logits(const std::vector<float>& x, int first_row, int rows, float* out) const {
    const model_config& c = m_.cfg;
    std::vector<float> xb(static_cast<std::size_t>(rows) * c.dim);
    rmsnorm_rows(x.data() + static_cast<std::size_t>(first_row) * c.dim, m_.final_norm.data(), rows, c.dim, c.rms_eps, xb.data());
    matmul(m_.classifier(), c.vocab_size, c.dim, xb.data(), rows, out);
}

transformer::prefill_result transformer::prefill(std::span<const int> tokens, bool all_logits) const {
    const model_config& c = m_.cfg;
    const int T = static_cast<int>(tokens.size());
    if (T == 0) throw eval_error("prefill needs at least one token");
    prefill_result r;
    r.k.resize(c.n_layers);
    r.v.resize(c.n_layers);
    std::vector<float> x(static_cast<std::size_t>(T) * c.dim);
    std::vector<int> pos(T);
    for (int t = 0; t < T; ++t) {
        if (tokens[t] < 0 || tokens[t] >= c.vocab_size) throw eval_error(fmt::format("token id {} out of range", tokens[t]));
        std::copy_n(m_.token_embd.data() + static_cast<std::size_t>(tokens[t]) * c.dim, c.dim, x.data() + static_cast<std::size_t>(t) * c.dim);
        pos[t] = t;
    }
    const int hd = c.head_dim, group = c.n_heads / c.n_kv_heads, KV = c.kv_dim(), Q = c.q_dim();
    const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
    auto causal = [&](int layer, const float* q, const float* k, const float* v, float* out) {
        r.k[layer].assign(k, k + static_cast<std::size_t>(T) * KV);
        r.v[layer].assign(v, v + static_cast<std::size_t>(T) * KV);
        tbb::parallel_for(0, T * c.n_heads, [&](int i) {
            thread_local std::vector<float> scratch;
            scratch.resize(T);
            const int t = i / c.n_heads, h = i % c.n_heads, kvh = h / group;
            attend_exact(q + static_cast<std::size_t>(t) * Q + h * hd, k + kvh * hd, v + kvh * hd, t + 1, KV, hd, scale,
                         scratch.data(), out + static_cast<std::size_t>(t) * Q + h * hd);
        });
    };
    layers(x, T, pos, causal);
    if (all_logits) {
        r.logits.resize(static_cast<std::size_t>(T) * c.vocab_size);
        logits(x, 0, T, r.logits.data());
    } else {
        r.logits.resize(c.vocab_size);
        logits(x, T - 1, 1, r.logits.data());
    }
    return r;
}

void transformer::decode(std::span<const int> tokens, int pos, const attention_fn& attend, float* out) const {
    const model_config& c = m_.cfg;
    const int B = static_cast<int>(tokens.size());
    std::vector<float> x(static_cast<std::size_t>(B) * c.dim);
    for (int b = 0; b < B; ++b) {
        if (tokens[b] < 0 || tokens[b] >= c.vocab_size) throw eval_error(fmt::format("token id {} out of range", tokens[b]));
        std::copy_n(m_.token_embd.data() + static_cast<std::size_t>(tokens[b]) * c.dim, c.dim, x.data() + static_cast<std::size_t>(b) * c.dim);
    }
    const std::vector<int> positions(B, pos);
    layers(x, B, positions, attend);
    logits(x, 0, B, out);
}

} // namespace pkveval

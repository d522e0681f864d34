/// The forward pass on small synthetic models with Gemma 3's parts (QK-norm, extra norms, GeGLU,
/// RoPE on halves, scaled embeddings, sliding-window layers): the decode path through the fp32 cache
/// reproduces the prefill path bit for bit, and a sliding window really hides what it should.

#include <cmath>
#include <random>

#include <doctest/doctest.h>

#include "evaluate.hpp"
#include "kv_method.hpp"

using namespace pkveval;

namespace {

std::vector<float> random_vector(std::mt19937& gen, std::size_t n, float centre, float spread) {
    std::normal_distribution<float> dist(centre, spread);
    std::vector<float> v(n);
    for (float& x : v) x = dist(gen);
    return v;
}

/// 3 layers, dim 32, 4 query heads and 1 KV head of 16, vocabulary 40. `local` marks sliding-window layers.
model gemma_like(std::vector<char> local, int window) {
    std::mt19937 gen(7);
    model m;
    model_config& c = m.cfg;
    c.dim = 32, c.hidden_dim = 48, c.n_layers = 3, c.n_heads = 4, c.n_kv_heads = 1, c.head_dim = 16, c.vocab_size = 40;
    c.max_seq_len = 256, c.rope_base = 1e6f, c.rope_base_local = 1e4f, c.rms_eps = 1e-6f;
    c.rope = rope_pairs::halves, c.gate = ffn_gate::gelu_tanh, c.embed_scale = std::sqrt(32.0f);
    c.layer_is_local = std::move(local), c.sliding_window = window;
    const std::size_t D = c.dim, H = c.hidden_dim, Q = c.q_dim(), KV = c.kv_dim(), HD = c.head_dim;
    const float w = 0.2f;
    m.token_embd = random_vector(gen, c.vocab_size * D, 0.0f, 0.3f);
    for (int l = 0; l < c.n_layers; ++l) {
        layer_weights lw;
        lw.attn_norm = random_vector(gen, D, 1.0f, 0.1f);
        lw.wq = random_vector(gen, Q * D, 0.0f, w), lw.wk = random_vector(gen, KV * D, 0.0f, w),
        lw.wv = random_vector(gen, KV * D, 0.0f, w);
        lw.wo = random_vector(gen, D * Q, 0.0f, w);
        lw.ffn_norm = random_vector(gen, D, 1.0f, 0.1f);
        lw.w_gate = random_vector(gen, H * D, 0.0f, w), lw.w_up = random_vector(gen, H * D, 0.0f, w);
        lw.w_down = random_vector(gen, D * H, 0.0f, w);
        lw.q_norm = random_vector(gen, HD, 1.0f, 0.2f), lw.k_norm = random_vector(gen, HD, 1.0f, 0.2f);
        lw.post_attn_norm = random_vector(gen, D, 1.0f, 0.1f), lw.post_ffn_norm = random_vector(gen, D, 1.0f, 0.1f);
        m.layers.push_back(std::move(lw));
    }
    m.final_norm = random_vector(gen, D, 1.0f, 0.1f);
    return m;
}

std::vector<int> tokens(int n, unsigned seed) {
    std::mt19937 gen(seed);
    std::vector<int> t(n);
    for (int& x : t) x = static_cast<int>(gen() % 40);
    return t;
}

/// Logits of the last token: prefill of all but the last, then one decode step through the fp32 cache.
std::vector<float> decode_last(const transformer& tf, const std::vector<int>& ids) {
    const model_config& c = tf.net().cfg;
    const int P = static_cast<int>(ids.size()) - 1;
    method_cache cache(parse_method("fp32", {}, c), c, P + 1);
    const transformer::prefill_result pre = tf.prefill(std::span(ids).subspan(0, P), P - 1);
    for (int l = 0; l < c.n_layers; ++l) cache.prefill(l, pre.k[l].data(), pre.v[l].data(), P);
    std::vector<float> logits(c.vocab_size);
    tf.decode(
        std::span(ids).subspan(P, 1), P,
        [&](int l, const float* q, const float* k, const float* v, float* o) { cache.step(l, q, k, v, o); }, logits.data());
    return logits;
}

std::vector<float> prefill_last(const transformer& tf, const std::vector<int>& ids) {
    return tf.prefill(ids, static_cast<int>(ids.size()) - 1).logits;
}

}  // namespace

TEST_CASE("Gemma-like model: the decode path equals the prefill path, global and sliding-window layers") {
    for (int T : {3, 6, 7, 20}) {  // shorter than, equal to and longer than the window (+1 for the new token)
        INFO("tokens " << T);
        const model m = gemma_like({1, 0, 1}, 6);
        const transformer tf(m);
        const std::vector<int> ids = tokens(T, 11);
        const std::vector<float> a = prefill_last(tf, ids), b = decode_last(tf, ids);
        CHECK(a == b);  // same kernels, same order: the same bits
    }
}

TEST_CASE("Gemma-like model: a sliding window hides tokens outside it, a global layer does not") {
    // three local layers of window 4: position 19 sees back to 19 - 3 * 3 = 10
    const std::vector<int> ids = tokens(20, 3);
    std::vector<int> changed = ids;
    changed[9] = (changed[9] + 1) % 40;
    {
        const model m = gemma_like({1, 1, 1}, 4);
        const transformer tf(m);
        CHECK(prefill_last(tf, ids) == prefill_last(tf, changed));
        CHECK(decode_last(tf, ids) == decode_last(tf, changed));
        std::vector<int> near = ids;
        near[10] = (near[10] + 1) % 40;
        CHECK(prefill_last(tf, ids) != prefill_last(tf, near));  // just inside the receptive field
    }
    {
        const model m = gemma_like({1, 0, 1}, 4);
        const transformer tf(m);
        CHECK(prefill_last(tf, ids) != prefill_last(tf, changed));
        CHECK(decode_last(tf, ids) != decode_last(tf, changed));
    }
}

TEST_CASE("Gemma-like model: quantized methods quantize the global layers only") {
    const model m = gemma_like({1, 0, 1}, 4);
    method_cache kivi(parse_method("kivi-2", {}, m.cfg), m.cfg, 300);
    CHECK(kivi.library_cache(0) == nullptr);
    CHECK(kivi.library_cache(1) != nullptr);
    CHECK(kivi.library_cache(2) == nullptr);
    method_cache fp(parse_method("fp32", {}, m.cfg), m.cfg, 300);
    for (int l = 0; l < 3; ++l) CHECK(fp.library_cache(l) == nullptr);
}

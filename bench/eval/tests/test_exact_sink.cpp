/// The `+exact_sink=N` diagnosis of kv_method: what it stores is counted, and what it attends at
/// full precision is exactly the first N prompt tokens.

#include <random>

#include <doctest/doctest.h>

#include "eval_error.hpp"
#include "kv_method.hpp"

using namespace pkveval;

namespace {

/// One global layer, 4 query heads over 1 KV head of 64 (one library cache).
model_config one_layer() {
    model_config c;
    c.dim = 256, c.hidden_dim = 64, c.n_layers = 1, c.n_heads = 4, c.n_kv_heads = 1, c.head_dim = 64, c.vocab_size = 8;
    c.max_seq_len = 1024;
    return c;
}

std::vector<float> normal(std::mt19937& gen, std::size_t n) {
    std::normal_distribution<float> dist(0.0f, 1.0f);
    std::vector<float> v(n);
    for (float& x : v) x = dist(gen);
    return v;
}

/// The first decode step's output of `name` after a prompt of P tokens (k, v, then q, k, v of the step).
std::vector<float> first_step(const std::string& name, const model_config& c, int P, double* bits = nullptr) {
    std::mt19937 gen(3);
    const auto k = normal(gen, static_cast<std::size_t>(P) * c.kv_dim()), v = normal(gen, k.size());
    const auto q = normal(gen, static_cast<std::size_t>(c.n_heads) * c.head_dim), k1 = normal(gen, c.kv_dim()),
               v1 = normal(gen, c.kv_dim());
    method_cache m(parse_method(name, {}, c), c, P + 1);
    m.prefill(0, k.data(), v.data(), P);
    std::vector<float> out(q.size());
    m.step(0, q.data(), k1.data(), v1.data(), out.data());
    if (bits != nullptr) *bits = m.bits_per_element();
    return out;
}

double max_difference(const std::vector<float>& a, const std::vector<float>& b) {
    double d = 0.0;
    for (std::size_t i = 0; i < a.size(); ++i) d = std::max(d, static_cast<double>(std::abs(a[i] - b[i])));
    return d;
}

}  // namespace

TEST_CASE("exact_sink: parsed as a method setting, not passed to the library") {
    const model_config c = one_layer();
    const method_spec s = parse_method("kivi-2+exact_sink=4", {}, c);
    CHECK(s.exact_sink == 4);
    CHECK(s.family == "kivi+exact_sink=4");  // never KIVI's yardstick
    CHECK(parse_method("kivi-2+exact_sink=0", {}, c).exact_sink == 0);
    CHECK_THROWS_AS(parse_method("kivi-2+exact_sink=many", {}, c), eval_error);
}

TEST_CASE("exact_sink: the first N prompt tokens are attended exactly and counted as fp16") {
    const model_config c = one_layer();
    const int P = 300;  // two 128-token pages quantized, 44 tokens in the fp16 window
    double plain_bits = 0.0, sink_bits = 0.0;
    const auto fp32 = first_step("fp32", c, P), plain = first_step("kivi-2", c, P, &plain_bits);
    const auto sink1 = first_step("kivi-2+exact_sink=1", c, P, &sink_bits), all = first_step("kivi-2+exact_sink=300", c, P);
    // one fp16 K and V row per cached token: 16 bits per element over the P + 1 cached tokens
    CHECK(sink_bits - plain_bits == doctest::Approx(16.0 / (P + 1)).epsilon(1e-9));
    // every prompt token exact: only the step's own token is fp16 (the window), so the output is
    // fp32's up to fp16 rounding; the 2-bit cache is far from it, and one exact token moves it
    CHECK(max_difference(all, fp32) < 2e-3);
    CHECK(max_difference(plain, fp32) > 2e-2);
    CHECK(max_difference(sink1, plain) > 0.0);
}

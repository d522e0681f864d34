/// stories260K (llama2.c, fp32) against the numbers of an independent forward pass
/// (shared/data/README.md), the decode path against the prefill path, and a patternkv-4 cache
/// against fp32 on the same protocol.

#include <algorithm>
#include <cmath>
#include <fstream>
#include <iterator>
#include <string>

#include <doctest/doctest.h>

#include "data_files.hpp"
#include "eval_error.hpp"
#include "evaluate.hpp"

using namespace pkveval;

namespace {

const model& stories() {
    static const model m = load_llama2c(test::data_file("stories260K.bin"), test::data_file("tok512.bin"));
    return m;
}

/// BOS + the llama2.c tokenization of the first 4,000 characters of tinystories_val.txt, first 512 tokens.
std::vector<int> val_tokens() {
    std::ifstream f(test::data_file("tinystories_val.txt"), std::ios::binary);
    std::string text(std::istreambuf_iterator<char>(f), {});
    text.resize(4000);  // the file's start is ASCII: 4,000 characters = 4,000 bytes
    std::vector<int> ids = stories().tok->encode(text, true);
    REQUIRE(ids.size() >= 512);
    ids.resize(512);
    return ids;
}

}  // namespace

TEST_CASE("stories260K: shape from the checkpoint header") {
    const model_config& c = stories().cfg;
    CHECK(c.dim == 64);
    CHECK(c.hidden_dim == 172);
    CHECK(c.n_layers == 5);
    CHECK(c.n_heads == 8);
    CHECK(c.n_kv_heads == 4);
    CHECK(c.head_dim == 8);
    CHECK(c.vocab_size == 512);
}

TEST_CASE("stories260K: greedy decoding from BOS") {
    const transformer tf(stories());
    const std::vector<int> bos{1};
    std::string text;
    generate_greedy(tf, bos, 40, [&](const std::string& s) { text += s; });
    MESSAGE("greedy: ", text);
    const std::string want = "Once upon a time, there was a little girl named Lily. She loved to play outside in the park.";
    CHECK(text.substr(0, want.size()) == want);
}

TEST_CASE("stories260K: full-precision NLL on tinystories_val") {
    const transformer tf(stories());
    const std::vector<int> ids = val_tokens();
    const double nll = prefill_mean_nll(tf, ids);
    MESSAGE("mean NLL over 511 predictions: ", nll);
    CHECK(std::abs(nll - 1.3112) <= 0.002);
}

TEST_CASE("stories260K: the fp32 decode path reproduces the prefill path, patternkv-4 stays close") {
    const transformer tf(stories());
    const std::vector<int> ids = val_tokens();
    // reference: per-token NLL of tokens 101..511 from the full-precision prefill
    const transformer::prefill_result pre = tf.prefill(ids, 0);
    double ref = 0.0;
    for (int t = 100; t < 511; ++t) {
        const float* z = pre.logits.data() + static_cast<std::size_t>(t) * 512;
        double mx = z[0], sum = 0.0;
        for (int i = 1; i < 512; ++i) mx = std::max<double>(mx, z[i]);
        for (int i = 0; i < 512; ++i) sum += std::exp(z[i] - mx);
        ref += mx + std::log(sum) - z[ids[t + 1]];
    }
    ref /= 411;

    eval_options opt;
    opt.prefill = 100;  // 100 prompt tokens (all in the window at first), 411 decode steps: 3 flushes
    opt.tokens = 411;
    opt.methods = {"fp32", "patternkv-4", "kivi-4"};
    opt.progress = false;
    const eval_report rep = evaluate(tf, ids, opt);
    REQUIRE(rep.results.size() == 3);
    const method_result& fp = rep.results[0];
    const method_result& pk = rep.results[1];
    const method_result& kv = rep.results[2];
    MESSAGE("fp32 nll ", fp.mean_nll, " (prefill path ", ref, "); patternkv-4 nll ", pk.mean_nll, " kl ", pk.kl, " top1 ", pk.top1,
            " bits ", pk.bits_per_element, "; kivi-4 nll ", kv.mean_nll, " kl ", kv.kl, " top1 ", kv.top1);
    // Same math, different summation grouping only: agreement to 1e-4 nats.
    CHECK(std::abs(fp.mean_nll - ref) < 1e-4);
    // quantized caches really differ from fp32 (a KL pipeline that returned 0 would fail here)
    CHECK(pk.kl > 0.0);
    CHECK(kv.kl > 0.0);
    // 4-bit codes with head_dim 8 add a little noise: mean NLL within 5% of fp32, and the method
    // must really be quantizing (bits/element well under 16).
    CHECK(pk.mean_nll <= fp.mean_nll * 1.05);
    CHECK(pk.mean_nll >= fp.mean_nll * 0.95);
    CHECK(pk.kl < 0.05);
    CHECK(pk.bits_per_element < 16.0);
    CHECK(pk.bits_per_element > 4.0);
}

TEST_CASE("stories260K: too short a text is a clean error") {
    const transformer tf(stories());
    const std::vector<int> ids{1, 400, 401};
    eval_options opt;
    opt.prefill = 2;
    opt.tokens = 2;
    opt.progress = false;
    CHECK_THROWS_AS(evaluate(tf, ids, opt), eval_error);
    CHECK_THROWS_AS(load_llama2c(test::data_file("tok512.bin"), test::data_file("tok512.bin")), eval_error);
    CHECK_THROWS_AS(load_model("/nonexistent/model.gguf", ""), eval_error);
}

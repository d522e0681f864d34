/// @file evaluate.cpp
/// Metrics in double from each step's logits: log-softmax, NLL of the true next token,
/// KL(fp32 || method) and argmax agreement with fp32.

#include "evaluate.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>

#include <fmt/format.h>

#include "eval_error.hpp"

namespace pkveval {
namespace {

using clock_type = std::chrono::steady_clock;
double seconds_since(clock_type::time_point t0) { return std::chrono::duration<double>(clock_type::now() - t0).count(); }

/// log-softmax of one logits row into `out`; returns the argmax.
int log_softmax(const float* z, int n, std::vector<double>& out) {
    out.resize(n);
    int arg = 0;
    for (int i = 1; i < n; ++i)
        if (z[i] > z[arg]) arg = i;
    const double mx = z[arg];
    double sum = 0.0;
    for (int i = 0; i < n; ++i) sum += std::exp(z[i] - mx);
    const double lse = mx + std::log(sum);
    for (int i = 0; i < n; ++i) out[i] = z[i] - lse;
    return arg;
}

struct accum {
    double nll = 0.0, kl = 0.0;
    int agree = 0;
};

} // namespace

eval_report evaluate(const transformer& tf, std::span<const int> ids, const eval_options& opt) {
    const model_config& mc = tf.net().cfg;
    const int P = opt.prefill, N = opt.tokens;
    if (P < 1 || N < 1) throw eval_error(fmt::format("--prefill ({}) and --tokens ({}) must be at least 1", P, N));
    if (static_cast<std::int64_t>(ids.size()) < static_cast<std::int64_t>(P) + N + 1)
        throw eval_error(fmt::format("the text has {} tokens; --prefill {} and --tokens {} need at least {}", ids.size(), P, N, P + N + 1));
    if (P + N > mc.max_seq_len)
        std::fprintf(stderr, "warning: %d positions exceed the model's context length %d\n", P + N, mc.max_seq_len);

    std::vector<std::string> names = opt.methods;
    if (std::find(names.begin(), names.end(), "fp32") != names.end()) names.erase(std::find(names.begin(), names.end(), "fp32"));
    names.insert(names.begin(), "fp32");
    std::vector<method_cache> methods;
    for (const auto& n : names) methods.emplace_back(parse_method(n, opt.sets, mc), mc, static_cast<std::int64_t>(P) + N);
    const int B = static_cast<int>(methods.size());

    eval_report rep;
    rep.prefill = P;
    rep.tokens = N;
    auto t0 = clock_type::now();
    if (opt.progress) std::fprintf(stderr, "prefill: %d tokens, %d layers ...\n", P, mc.n_layers);
    const transformer::prefill_result pre = tf.prefill(ids.subspan(0, P), false);
    for (auto& m : methods)
        for (int l = 0; l < mc.n_layers; ++l) m.prefill(l, pre.k[l].data(), pre.v[l].data(), P);
    rep.prefill_seconds = seconds_since(t0);
    if (opt.progress) std::fprintf(stderr, "prefill done in %.1f s (caches filled for %d methods)\n", rep.prefill_seconds, B);

    const int Q = mc.q_dim(), KV = mc.kv_dim(), V = mc.vocab_size;
    auto attend = [&](int layer, const float* q, const float* k, const float* v, float* out) {
        for (int b = 0; b < B; ++b)  // one method at a time, so each one's timing is its own
            methods[b].step(layer, q + static_cast<std::size_t>(b) * Q, k + static_cast<std::size_t>(b) * KV,
                            v + static_cast<std::size_t>(b) * KV, out + static_cast<std::size_t>(b) * Q);
    };
    std::vector<accum> acc(B);
    std::vector<float> logits(static_cast<std::size_t>(B) * V);
    std::vector<double> ref, lp;
    t0 = clock_type::now();
    int next_report = 0;
    for (int j = 0; j < N; ++j) {
        const std::vector<int> step_tokens(B, ids[P + j]);
        tf.decode(step_tokens, P + j, attend, logits.data());
        const int target = ids[P + j + 1];
        const int ref_arg = log_softmax(logits.data(), V, ref);
        for (int b = 0; b < B; ++b) {
            const int arg = b == 0 ? ref_arg : log_softmax(logits.data() + static_cast<std::size_t>(b) * V, V, lp);
            const std::vector<double>& mine = b == 0 ? ref : lp;
            acc[b].nll -= mine[target];
            double kl = 0.0;
            if (b != 0)
                for (int i = 0; i < V; ++i) kl += std::exp(ref[i]) * (ref[i] - mine[i]);
            acc[b].kl += kl;
            acc[b].agree += arg == ref_arg;
        }
        if (opt.progress && (100 * (j + 1)) / N >= next_report) {
            const double el = seconds_since(t0);
            std::fprintf(stderr, "decode: %d/%d (%d%%)  %.2f steps/s  eta %.0f s\n", j + 1, N, 100 * (j + 1) / N, (j + 1) / el,
                         el / (j + 1) * (N - j - 1));
            next_report = (100 * (j + 1)) / N + 5;
        }
    }
    rep.decode_seconds = seconds_since(t0);
    for (int b = 0; b < B; ++b) {
        method_result r;
        r.method = methods[b].spec().name;
        r.config = methods[b].spec().exact ? "" : methods[b].spec().cfg.describe();
        r.bits_per_element = methods[b].bits_per_element();
        r.cache_bytes = methods[b].bytes();
        r.mean_nll = acc[b].nll / N;
        r.ppl = std::exp(r.mean_nll);
        r.kl = acc[b].kl / N;
        r.top1 = static_cast<double>(acc[b].agree) / N;
        r.cache_seconds = methods[b].step_seconds();
        r.tokens_per_s = r.cache_seconds > 0 ? N / r.cache_seconds : 0.0;
        rep.results.push_back(std::move(r));
    }
    return rep;
}

double prefill_mean_nll(const transformer& tf, std::span<const int> ids) {
    const int T = static_cast<int>(ids.size());
    if (T < 2) throw eval_error("need at least 2 tokens to measure NLL");
    const transformer::prefill_result pre = tf.prefill(ids, true);
    const int V = tf.net().cfg.vocab_size;
    std::vector<double> lp;
    double nll = 0.0;
    for (int t = 0; t + 1 < T; ++t) {
        log_softmax(pre.logits.data() + static_cast<std::size_t>(t) * V, V, lp);
        nll -= lp[ids[t + 1]];
    }
    return nll / (T - 1);
}

std::vector<int> generate_greedy(const transformer& tf, std::span<const int> prompt, int max_new,
                                 const std::function<void(const std::string&)>& on_token) {
    const model& m = tf.net();
    if (prompt.empty()) throw eval_error("generation needs a prompt of at least one token");
    const int P = static_cast<int>(prompt.size());
    method_cache cache(parse_method("fp32", {}, m.cfg), m.cfg, static_cast<std::int64_t>(P) + max_new);
    const transformer::prefill_result pre = tf.prefill(prompt, false);
    for (int l = 0; l < m.cfg.n_layers; ++l) cache.prefill(l, pre.k[l].data(), pre.v[l].data(), P);
    const int V = m.cfg.vocab_size;
    std::vector<float> logits = pre.logits;
    std::vector<int> out;
    int prev = prompt.back();
    auto attend = [&](int layer, const float* q, const float* k, const float* v, float* o) { cache.step(layer, q, k, v, o); };
    for (int i = 0; i < max_new; ++i) {
        const int next = static_cast<int>(std::max_element(logits.begin(), logits.begin() + V) - logits.begin());
        if (next == m.tok->eos_id() || next == m.tok->bos_id()) break;
        out.push_back(next);
        if (on_token) on_token(m.tok->decode(next, prev));
        prev = next;
        if (i + 1 == max_new) break;
        const int tok[1] = {next};
        tf.decode(tok, P + i, attend, logits.data());
    }
    return out;
}

} // namespace pkveval

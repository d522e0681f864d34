/// @file evaluate.cpp
/// Metrics in double from each step's logits: log-softmax, NLL of the true next token,
/// KL(fp32 || method) and argmax agreement with fp32.

#include "evaluate.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <numeric>
#include <cstdio>

#include <fmt/format.h>
#include <tbb/parallel_for.h>

#include "eval_error.hpp"
#include "pattern_ranges.hpp"

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

/// Per-prediction values of one method, over all chunks.
struct samples {
    std::vector<double> nll, kl, bits;
    int agree = 0;
};

/// Chunk start offsets: `chunks` windows of `need` tokens spread evenly over `available` tokens.
std::vector<int> chunk_offsets(std::int64_t available, std::int64_t need, int chunks) {
    std::vector<int> o(chunks, 0);
    for (int c = 1; c < chunks; ++c) o[c] = static_cast<int>((available - need) * c / (chunks - 1));
    return o;
}

/// Teacher-forced decoding of one chunk: step j feeds token P+j to every method and scores the
/// prediction of token P+j+1 against fp32 (methods[0]).
void decode_chunk(const transformer& tf, std::span<const int> chunk, int P, int N, std::vector<method_cache>& methods,
                  std::vector<samples>& acc, std::vector<float>& logits, bool progress) {
    const model_config& mc = tf.net().cfg;
    const int B = static_cast<int>(methods.size()), Q = mc.q_dim(), KV = mc.kv_dim(), V = mc.vocab_size;
    auto attend = [&](int layer, const float* q, const float* k, const float* v, float* out) {
        for (int b = 0; b < B; ++b)  // one method at a time, so each one's timing is its own
            methods[b].step(layer, q + static_cast<std::size_t>(b) * Q, k + static_cast<std::size_t>(b) * KV,
                            v + static_cast<std::size_t>(b) * KV, out + static_cast<std::size_t>(b) * Q);
    };
    std::vector<double> ref, ref_p(V);
    const auto t0 = clock_type::now();
    int next_report = 0;
    for (int j = 0; j < N; ++j) {
        const std::vector<int> step_tokens(B, chunk[P + j]);
        tf.decode(step_tokens, P + j, attend, logits.data());
        const int target = chunk[P + j + 1];
        const int ref_arg = log_softmax(logits.data(), V, ref);
        for (int i = 0; i < V; ++i) ref_p[i] = std::exp(ref[i]);
        // methods in parallel: each one's samples are its own (vocabularies of 262K make this count)
        tbb::parallel_for(0, B, [&](int b) {
            thread_local std::vector<double> lp;
            const int arg = b == 0 ? ref_arg : log_softmax(logits.data() + static_cast<std::size_t>(b) * V, V, lp);
            const std::vector<double>& mine = b == 0 ? ref : lp;
            double kl = 0.0;
            if (b != 0)
                for (int i = 0; i < V; ++i) kl += ref_p[i] * (ref[i] - mine[i]);
            acc[b].nll.push_back(-mine[target]);
            acc[b].kl.push_back(kl);
            acc[b].bits.push_back(methods[b].bits_per_element());  // what the cache held when it made this prediction
            acc[b].agree += arg == ref_arg;
        });
        if (progress && (100 * (j + 1)) / N >= next_report) {
            const double el = seconds_since(t0);
            std::fprintf(stderr, "decode: %d/%d (%d%%)  %.2f steps/s  eta %.0f s\n", j + 1, N, 100 * (j + 1) / N, (j + 1) / el,
                         el / (j + 1) * (N - j - 1));
            next_report = (100 * (j + 1)) / N + 10;
        }
    }
}

}  // namespace

std::vector<double> block_means(std::span<const double> values, int chunks, int block) {
    std::vector<double> means;
    if (values.empty()) return means;
    const std::size_t per_chunk = values.size() / chunks;
    for (int c = 0; c < chunks; ++c) {
        const std::size_t first = c * per_chunk, nblocks = std::max<std::size_t>(1, per_chunk / block);
        for (std::size_t b = 0; b < nblocks; ++b) {
            const std::size_t lo = first + b * block, hi = b + 1 == nblocks ? first + per_chunk : lo + block;
            double sum = 0.0;
            for (std::size_t i = lo; i < hi; ++i) sum += values[i];
            means.push_back(sum / static_cast<double>(hi - lo));
        }
    }
    return means;
}

namespace {

/// Standard error of the mean of `x` (0 with fewer than 2 values). Blocks of unequal length are
/// rare (only a chunk's last) and weigh the same here.
double standard_error(std::span<const double> x) {
    if (x.size() < 2) return 0.0;
    double mean = 0.0, var = 0.0;
    for (double v : x) mean += v;
    mean /= static_cast<double>(x.size());
    for (double v : x) var += (v - mean) * (v - mean);
    return std::sqrt(var / static_cast<double>(x.size() - 1) / static_cast<double>(x.size()));
}

/// The two KIVI rows (equal K/V widths) whose bits bracket `bits`, and the interpolation weight of
/// the second; nullptrs when there are none.
struct kivi_bracket {
    const method_result *lo = nullptr, *hi = nullptr;
    double f = 0.0;
};

kivi_bracket bracket(const eval_report& r, double bits) {
    std::vector<const method_result*> pts;
    for (const auto& m : r.results)
        if (m.family == "kivi" && m.k_bits == m.v_bits && m.kl > 0) pts.push_back(&m);
    std::sort(pts.begin(), pts.end(), [](auto* a, auto* b) { return a->bits_per_element < b->bits_per_element; });
    for (std::size_t i = 0; i + 1 < pts.size(); ++i) {
        const double b0 = pts[i]->bits_per_element, b1 = pts[i + 1]->bits_per_element;
        if (bits >= b0 && bits <= b1 && b1 > b0) return {pts[i], pts[i + 1], (bits - b0) / (b1 - b0)};
    }
    return {};
}

}  // namespace

std::pair<double, double> mean_and_se(std::span<const double> values, int chunks, int block) {
    if (values.empty()) return {0.0, 0.0};
    double total = 0.0;
    for (double v : values) total += v;
    return {total / static_cast<double>(values.size()), standard_error(block_means(values, chunks, block))};
}

double kivi_kl_at(const eval_report& r, double bits) {
    const kivi_bracket k = bracket(r, bits);
    return k.lo == nullptr ? std::nan("") : std::exp(std::log(k.lo->kl) + k.f * (std::log(k.hi->kl) - std::log(k.lo->kl)));
}

std::pair<double, double> kl_over_kivi(const eval_report& r, const method_result& m) {
    const kivi_bracket k = bracket(r, m.bits_per_element);
    if (k.lo == nullptr || m.kl <= 0) return {std::nan(""), std::nan("")};
    const double ratio = m.kl / kivi_kl_at(r, m.bits_per_element);
    // the same interpolation block by block, on the same predictions: the spread of the log ratio
    const std::size_t n = m.kl_blocks.size();
    if (n < 2 || k.lo->kl_blocks.size() != n || k.hi->kl_blocks.size() != n) return {ratio, 0.0};
    std::vector<double> log_ratio(n);
    for (std::size_t b = 0; b < n; ++b) {
        const double lo = std::max(k.lo->kl_blocks[b], 1e-300), hi = std::max(k.hi->kl_blocks[b], 1e-300);
        log_ratio[b] = std::log(std::max(m.kl_blocks[b], 1e-300)) - (std::log(lo) + k.f * (std::log(hi) - std::log(lo)));
    }
    return {ratio, ratio * standard_error(log_ratio)};
}

eval_report evaluate(const transformer& tf, std::span<const int> ids, const eval_options& opt) {
    const model_config& mc = tf.net().cfg;
    const int P = opt.prefill, N = opt.tokens, C = opt.chunks;
    if (P < 1 || N < 1 || C < 1)
        throw eval_error(fmt::format("--prefill ({}), --tokens ({}) and --chunks ({}) must be at least 1", P, N, C));
    const std::int64_t need = static_cast<std::int64_t>(P) + N + 1;
    if (static_cast<std::int64_t>(ids.size()) < need)
        throw eval_error(fmt::format("the text has {} tokens; --prefill {} and --tokens {} need at least {}", ids.size(), P, N, need));
    if (P + N > mc.max_seq_len) std::fprintf(stderr, "warning: %d positions exceed the model's context length %d\n", P + N, mc.max_seq_len);

    std::vector<std::string> names = opt.methods;
    if (std::find(names.begin(), names.end(), "fp32") != names.end()) names.erase(std::find(names.begin(), names.end(), "fp32"));
    names.insert(names.begin(), "fp32");
    std::vector<method_spec> specs;
    for (const auto& n : names) specs.push_back(parse_method(n, opt.sets, mc));
    const int B = static_cast<int>(specs.size());

    eval_report rep;
    rep.prefill = P;
    rep.tokens = N;
    rep.chunks = C;
    rep.n_layers = mc.n_layers;
    rep.local_layers = mc.local_layers();
    rep.sliding_window = mc.sliding_window;
    rep.chunk_offsets = chunk_offsets(static_cast<std::int64_t>(ids.size()), need, C);
    if (C > 1 && rep.chunk_offsets[1] < N && opt.progress)
        std::fprintf(stderr,
                     "warning: the text is short for %d chunks: decoded spans of neighbouring chunks overlap "
                     "(offset step %d < %d decode tokens), so the standard errors are optimistic\n",
                     C, rep.chunk_offsets[1], N);
    std::vector<samples> acc(B);
    std::vector<double> cache_seconds(B, 0.0);
    std::vector<float> logits(static_cast<std::size_t>(B) * mc.vocab_size);
    std::vector<method_cache> methods;
    for (int c = 0; c < C; ++c) {
        const std::span<const int> chunk = ids.subspan(rep.chunk_offsets[c], need);
        methods.clear();
        for (const auto& sp : specs) methods.emplace_back(sp, mc, static_cast<std::int64_t>(P) + N);
        auto t0 = clock_type::now();
        if (opt.progress)
            std::fprintf(stderr, "chunk %d/%d (tokens %d..): prefill %d tokens, %d layers ...\n", c + 1, C, rep.chunk_offsets[c], P,
                         mc.n_layers);
        const transformer::prefill_result pre = tf.prefill(chunk.subspan(0, P), P - 1);
        for (auto& m : methods)
            for (int l = 0; l < mc.n_layers; ++l) m.prefill(l, pre.k[l].data(), pre.v[l].data(), P);
        rep.prefill_seconds += seconds_since(t0);
        if (opt.ranges) std::printf("%s", format_range_report(methods, pre, mc, c).c_str());
        if (opt.progress) std::fprintf(stderr, "prefill done in %.1f s (caches filled for %d methods)\n", seconds_since(t0), B);
        decode_chunk(tf, chunk, P, N, methods, acc, logits, opt.progress);
        rep.decode_seconds += seconds_since(t0);
        for (int b = 0; b < B; ++b) cache_seconds[b] += methods[b].step_seconds();
    }
    rep.decode_seconds -= rep.prefill_seconds;
    for (int b = 0; b < B; ++b) {
        const method_spec& sp = methods[b].spec();
        method_result r;
        r.method = sp.name;
        r.family = sp.family;
        r.k_bits = sp.exact ? 32 : sp.cfg.k_bits;
        r.v_bits = sp.exact ? 32 : sp.cfg.v_bits;
        r.config = sp.exact ? "" : sp.cfg.describe();
        r.bits_per_element = mean_and_se(acc[b].bits, C, opt.se_block).first;
        r.bits_at_end = methods[b].bits_per_element();
        r.cache_bytes = methods[b].bytes();
        std::tie(r.mean_nll, r.nll_se) = mean_and_se(acc[b].nll, C, opt.se_block);
        r.kl_blocks = block_means(acc[b].kl, C, opt.se_block);
        r.kl = std::accumulate(acc[b].kl.begin(), acc[b].kl.end(), 0.0) / static_cast<double>(acc[b].kl.size());
        r.kl_se = standard_error(r.kl_blocks);
        r.ppl = std::exp(r.mean_nll);
        r.top1 = static_cast<double>(acc[b].agree) / (static_cast<double>(N) * C);
        r.cache_seconds = cache_seconds[b];
        r.tokens_per_s = r.cache_seconds > 0 ? static_cast<double>(N) * C / r.cache_seconds : 0.0;
        rep.results.push_back(std::move(r));
    }
    return rep;
}

namespace {

/// Summed NLL of the predictions made at positions first..T-2 of one prefill.
double prefill_nll(const transformer& tf, std::span<const int> ids, int first) {
    const int V = tf.net().cfg.vocab_size, T = static_cast<int>(ids.size());
    const transformer::prefill_result pre = tf.prefill(ids, first);
    std::vector<double> lp;
    double nll = 0.0;
    for (int t = first; t + 1 < T; ++t) {
        log_softmax(pre.logits.data() + static_cast<std::size_t>(t - first) * V, V, lp);
        nll -= lp[ids[t + 1]];
    }
    return nll;
}

}  // namespace

double prefill_mean_nll(const transformer& tf, std::span<const int> ids) {
    const int T = static_cast<int>(ids.size());
    if (T < 2) throw eval_error("need at least 2 tokens to measure NLL");
    return prefill_nll(tf, ids, 0) / (T - 1);
}

std::vector<double> chunk_perplexity_nll(const transformer& tf, std::span<const int> ids, int ctx, int bos, int max_chunks, bool progress) {
    if (ctx < 4) throw eval_error(fmt::format("--perplexity needs a context of at least 4 tokens, got {}", ctx));
    const int chunks = std::min<std::int64_t>(max_chunks, static_cast<std::int64_t>(ids.size()) / ctx);
    if (chunks < 1) throw eval_error(fmt::format("the text has {} tokens, fewer than one chunk of {}", ids.size(), ctx));
    std::vector<double> out;
    for (int c = 0; c < chunks; ++c) {
        std::vector<int> chunk(ids.begin() + static_cast<std::ptrdiff_t>(c) * ctx, ids.begin() + static_cast<std::ptrdiff_t>(c + 1) * ctx);
        if (bos >= 0) chunk[0] = bos;
        const int first = ctx / 2;
        out.push_back(prefill_nll(tf, chunk, first) / (ctx - 1 - first));
        if (progress) std::fprintf(stderr, "perplexity: chunk %d/%d: ppl %.4f\n", c + 1, chunks, std::exp(out.back()));
    }
    return out;
}

std::vector<int> generate_greedy(const transformer& tf, std::span<const int> prompt, int max_new,
                                 const std::function<void(const std::string&)>& on_token) {
    const model& m = tf.net();
    if (prompt.empty()) throw eval_error("generation needs a prompt of at least one token");
    const int P = static_cast<int>(prompt.size());
    method_cache cache(parse_method("fp32", {}, m.cfg), m.cfg, static_cast<std::int64_t>(P) + max_new);
    const transformer::prefill_result pre = tf.prefill(prompt, P - 1);
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

}  // namespace pkveval

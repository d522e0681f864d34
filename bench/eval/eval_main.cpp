/// @file eval_main.cpp
/// patternkv-eval: compares KV-cache methods on a real model (see --help).

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <optional>
#include <sstream>
#include <string>

#include <fmt/format.h>
#include <tbb/global_control.h>

#include "eval_error.hpp"
#include "evaluate.hpp"
#include "report.hpp"

namespace {

using namespace pkveval;

const char* const default_text = "/usr/share/common-licenses/GPL-3";

struct cli {
    std::string model_path, tokenizer_path, text_path = default_text, json_path, plot_path, method_list;
    std::optional<std::string> generate;
    bool chunks_given = false;
    int max_new = 64, threads = 0, perplexity_ctx = 0;
    eval_options opt;
};

void print_help() {
    const eval_options d;
    std::printf(
        "patternkv-eval: KV-cache accuracy of libpatternkv methods on a Llama-family model (CPU, fp32)\n\n"
        "usage: patternkv-eval --model FILE [options]\n"
        "  --model FILE        GGUF (v2/v3, llama) or llama2.c .bin checkpoint\n"
        "  --tokenizer FILE    llama2.c tokenizer.bin (llama2.c checkpoints only)\n"
        "  --text FILE         text to evaluate on (default %s)\n"
        "  --methods a,b,...   default %s\n"
        "                      known: %s\n"
        "  --prefill P         tokens prefilled at full precision (default %d)\n"
        "  --tokens N          teacher-forced decode steps measured (default %d); the text needs P+N+1 tokens\n"
        "  --chunks C          run the protocol on C windows of P+N+1 tokens spread over the text (default %d);\n"
        "                      standard errors come from batch means over blocks of 32 predictions\n"
        "  --ranges            after each prefill, print how much the patterns shrink or inflate the\n"
        "                      quantized ranges, per layer, for K (fast/slow RoPE channels) and V\n"
        "  --set key=value     libpatternkv config override for every non-fp32 method (repeatable)\n"
        "  --json FILE         write the results as JSON\n"
        "  --plot FILE.svg     write KL and perplexity vs bits/element as SVG\n"
        "  --threads T         worker threads (default: all cores)\n"
        "  --quiet             no progress on stderr\n"
        "  --generate PROMPT   greedy generation with an fp32 cache instead of the evaluation\n"
        "  --max-new N         tokens to generate (default 64)\n"
        "  --perplexity CTX    fp32 perplexity by llama-perplexity's protocol (chunks of CTX tokens, second\n"
        "                      halves scored; --chunks C caps the chunk count) instead of the evaluation\n"
        "  --help\n\n"
        "Metrics cover the N predictions made by the decode steps (tokens P+1..P+N); KL and top-1 are\n"
        "against the fp32 cache; bits/element counts everything each cache stores; cache tok/s is the\n"
        "method's own append+attend time. Text gets BOS first when the model's tokenizer asks for it.\n",
        default_text, fmt::format("{}", fmt::join(d.methods, ",")).c_str(), method_names_help().c_str(), d.prefill, d.tokens, d.chunks);
}

int parse_int(const std::string& flag, const std::string& v, int lo) {
    try {
        std::size_t used = 0;
        const long x = std::stol(v, &used);
        if (used != v.size() || x < lo || x > 1 << 24) throw eval_error("");
        return static_cast<int>(x);
    } catch (const std::exception&) {
        throw eval_error(fmt::format("{} needs an integer >= {}, got '{}'", flag, lo, v));
    }
}

std::vector<std::string> split_list(const std::string& s) {
    std::vector<std::string> out;
    std::stringstream ss(s);
    for (std::string item; std::getline(ss, item, ',');)
        if (!item.empty()) out.push_back(item);
    return out;
}

cli parse_args(int argc, char** argv) {
    cli c;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        if (a == "--help" || a == "-h") {
            print_help();
            std::exit(0);
        }
        if (a == "--quiet") {
            c.opt.progress = false;
            continue;
        }
        if (a == "--ranges") {
            c.opt.ranges = true;
            continue;
        }
        if (i + 1 >= argc) throw eval_error(fmt::format("{} needs a value (see --help)", a));
        const std::string v = argv[++i];
        if (a == "--model")
            c.model_path = v;
        else if (a == "--tokenizer")
            c.tokenizer_path = v;
        else if (a == "--text")
            c.text_path = v;
        else if (a == "--methods")
            c.method_list = v;
        else if (a == "--prefill")
            c.opt.prefill = parse_int(a, v, 1);
        else if (a == "--tokens")
            c.opt.tokens = parse_int(a, v, 1);
        else if (a == "--chunks")
            c.opt.chunks = parse_int(a, v, 1), c.chunks_given = true;
        else if (a == "--json")
            c.json_path = v;
        else if (a == "--plot")
            c.plot_path = v;
        else if (a == "--threads")
            c.threads = parse_int(a, v, 1);
        else if (a == "--generate")
            c.generate = v;
        else if (a == "--max-new")
            c.max_new = parse_int(a, v, 1);
        else if (a == "--perplexity")
            c.perplexity_ctx = parse_int(a, v, 4);
        else if (a == "--set") {
            const auto eq = v.find('=');
            if (eq == std::string::npos || eq == 0) throw eval_error(fmt::format("--set needs key=value, got '{}'", v));
            c.opt.sets.emplace_back(v.substr(0, eq), v.substr(eq + 1));
        } else
            throw eval_error(fmt::format("unknown option '{}' (see --help)", a));
    }
    if (c.model_path.empty()) throw eval_error("--model is required (see --help)");
    if (!c.method_list.empty()) c.opt.methods = split_list(c.method_list);
    if (c.opt.methods.empty()) throw eval_error("--methods is empty");
    return c;
}

std::string read_text(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    if (!f) throw eval_error(fmt::format("cannot open text file '{}'", path));
    return std::string(std::istreambuf_iterator<char>(f), {});
}

int print_perplexity(const transformer& tf, const std::vector<int>& ids, const cli& c) {
    const model& m = tf.net();
    const int max_chunks = c.chunks_given ? c.opt.chunks : 1 << 30;
    const std::vector<double> nll =
        chunk_perplexity_nll(tf, ids, c.perplexity_ctx, m.tok->adds_bos() ? m.tok->bos_id() : -1, max_chunks, c.opt.progress);
    double sum = 0.0, sum2 = 0.0;
    for (double x : nll) sum += x, sum2 += x * x;
    const double n = static_cast<double>(nll.size()), mean = sum / n;
    // chunks as the sampling unit: the standard error of the mean chunk NLL, carried to ppl
    const double se = nll.size() > 1 ? std::sqrt((sum2 / n - mean * mean) * n / (n - 1) / n) : 0.0;
    std::printf("model %s | text %s | %zu tokens | %zu chunk(s) of %d, second halves scored (%d predictions each)\n", m.name.c_str(),
                c.text_path.c_str(), ids.size(), nll.size(), c.perplexity_ctx, c.perplexity_ctx - 1 - c.perplexity_ctx / 2);
    for (std::size_t i = 0; i < nll.size(); ++i) std::printf("chunk %zu: ppl %.4f\n", i + 1, std::exp(nll[i]));
    std::printf("fp32 perplexity: %.4f (mean NLL %.5f +/- %.5f over chunks)\n", std::exp(mean), mean, se);
    return 0;
}

int run(int argc, char** argv) {
    const cli c = parse_args(argc, argv);
    std::optional<tbb::global_control> threads;
    if (c.threads > 0) threads.emplace(tbb::global_control::max_allowed_parallelism, c.threads);
    const std::string text = c.generate ? std::string() : read_text(c.text_path);  // fail before the slow load

    const auto t0 = std::chrono::steady_clock::now();
    const model m = load_model(c.model_path, c.tokenizer_path);
    const transformer tf(m);
    if (c.opt.progress)
        std::fprintf(stderr, "loaded %s: %d layers, dim %d, %d q / %d kv heads, head_dim %d, vocab %d (%.1f s)\n", m.name.c_str(),
                     m.cfg.n_layers, m.cfg.dim, m.cfg.n_heads, m.cfg.n_kv_heads, m.cfg.head_dim, m.cfg.vocab_size,
                     std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());

    if (c.generate) {
        const std::vector<int> prompt = m.tok->encode(*c.generate, m.tok->adds_bos(), true);
        if (prompt.empty()) throw eval_error("the prompt encodes to no tokens (and the model adds no BOS)");
        std::printf("%s", c.generate->c_str());
        std::fflush(stdout);
        const auto g0 = std::chrono::steady_clock::now();
        const auto ids = generate_greedy(tf, prompt, c.max_new, [](const std::string& s) {
            std::fwrite(s.data(), 1, s.size(), stdout);
            std::fflush(stdout);
        });
        std::printf("\n");
        std::fprintf(stderr, "[%zu prompt tokens, %zu generated in %.2f s]\n", prompt.size(), ids.size(),
                     std::chrono::duration<double>(std::chrono::steady_clock::now() - g0).count());
        return 0;
    }

    const std::vector<int> ids = m.tok->encode(text, m.tok->adds_bos());
    if (c.opt.progress) std::fprintf(stderr, "text %s: %zu bytes, %zu tokens\n", c.text_path.c_str(), text.size(), ids.size());
    if (c.perplexity_ctx > 0) return print_perplexity(tf, ids, c);
    const auto e0 = std::chrono::steady_clock::now();
    eval_report rep = evaluate(tf, ids, c.opt);
    rep.model = m.name;
    rep.text = c.text_path;
    std::printf("%s", format_table(rep).c_str());
    std::printf("wall time of the evaluation: %.1f s\n", std::chrono::duration<double>(std::chrono::steady_clock::now() - e0).count());
    if (!c.json_path.empty()) write_file(c.json_path, format_json(rep));
    if (!c.plot_path.empty()) write_file(c.plot_path, format_svg(rep));
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    try {
        return run(argc, argv);
    } catch (const std::exception& e) {  // eval_error, patternkv::error, bad_alloc: a message, never a crash
        std::fprintf(stderr, "patternkv-eval: error: %s\n", e.what());
        return 1;
    }
}

// patternkv-bench: decode-attention speed of every cache method against dense fp32/fp16 baselines
// measured in the same run, the machine's read bandwidth, flush and prefill costs, and thread
// scaling. Ratios, not absolute times, are the results (these machines are noisy).
#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <tbb/global_control.h>
#include <tbb/task_arena.h>

#include <patternkv/patternkv.hpp>

#include "core/hash.hpp"
#include "dense_baselines.hpp"
#include "reference/simd/cpu_features.hpp"
#include "timing.hpp"

namespace {

using pkv_bench::median_seconds;

struct options {
    bool quick = false;
    std::string json;
    std::vector<std::int64_t> contexts{1024, 4096, 16384, 65536};
    std::vector<int> batches{1, 8};
    std::string only;  ///< comma-separated parts to run (decode, flush, prefill, threads); empty = all
    bool runs(const char* part) const { return only.empty() || ("," + only + ",").find(std::string(",") + part + ",") != std::string::npos; }
};

constexpr int kv_heads = 8, q_heads = 32, head_dim = 128;

struct json_writer {
    std::vector<std::string> items;
    void add(const std::string& obj) { items.push_back(obj); }
};

patternkv::config method_config(const std::string& m) {
    const int bits = m.back() - '0';
    patternkv::config c = m.rfind("kivi", 0) == 0 ? patternkv::kivi_config(bits) : patternkv::patternkv_config(bits);
    c.head_dim = head_dim;
    c.num_kv_heads = kv_heads;
    c.num_q_heads = q_heads;
    return c;
}

std::vector<float> pseudo_random(std::size_t n, std::uint64_t seed, float scale) {
    std::vector<float> v(n);
    std::uint64_t x = seed * 0x9e3779b97f4a7c15ull + 1;
    for (auto& e : v) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        e = (static_cast<float>(x >> 40) / 16777216.0f * 2.0f - 1.0f) * scale;
    }
    return v;
}

// A library cache of `ctx` tokens per sequence, built by one prefill per sequence. k-means runs
// 2 iterations here: attention speed does not depend on the pattern values, only on their count.
patternkv::layer_cache make_cache(const std::string& m, int batch, std::int64_t ctx) {
    patternkv::config c = method_config(m);
    c.kmeans_iterations = 2;
    patternkv::layer_cache cache(c, batch, ctx);
    for (int b = 0; b < batch; ++b) {
        const auto k = pseudo_random(static_cast<std::size_t>(ctx) * kv_heads * head_dim, 10 + b, 2.0f);
        const auto v = pseudo_random(k.size(), 20 + b, 2.0f);
        cache.prefill(b, patternkv::view_f32(k.data(), ctx, kv_heads, head_dim), patternkv::view_f32(v.data(), ctx, kv_heads, head_dim));
    }
    return cache;
}

struct decode_row {
    std::string method;
    std::int64_t ctx;
    int batch;
    double seconds, bytes;
};

std::vector<decode_row> bench_decode(const options& o, double stream_bw, json_writer& js) {
    std::vector<decode_row> rows;
    const std::vector<std::string> methods{"fp32", "fp16", "kivi-2", "kivi-4", "patternkv-2", "patternkv-4"};
    fmt::print("\n== decode attention, {} KV heads x head_dim {}, GQA {} (one query token per sequence) ==\n", kv_heads,
               head_dim, q_heads / kv_heads);
    fmt::print("{:>6} {:>5} {:<12} {:>10} {:>11} {:>8} {:>9} {:>10}\n", "ctx", "batch", "method", "ms/step", "cache MB",
               "GB/s", "%stream", "vs fp16");
    for (int batch : o.batches)
        for (std::int64_t ctx : o.contexts) {
            if (o.quick && batch > 1 && ctx > 4096) continue;
            const int reps = ctx >= 65536 ? 3 : 7;
            const auto q = pseudo_random(static_cast<std::size_t>(batch) * q_heads * head_dim, 99, 1.0f);
            std::vector<float> out(q.size());
            double fp16_time = 0.0;
            for (const auto& m : methods) {
                double t = 0.0, bytes = 0.0;
                if (m == "fp32" || m == "fp16") {
                    const auto dc = pkv_bench::make_dense_cache({batch, kv_heads, q_heads, head_dim, ctx}, m == "fp16", 7);
                    bytes = static_cast<double>(dc.bytes());
                    t = median_seconds(reps, [&] { pkv_bench::dense_decode_attention(dc, q.data(), out.data()); });
                } else {
                    const patternkv::layer_cache cache = make_cache(m, batch, ctx);
                    bytes = static_cast<double>(cache.memory().total_bytes());
                    t = median_seconds(reps, [&] {
                        cache.attend(patternkv::view_f32(q.data(), batch, q_heads, head_dim),
                                     patternkv::view_f32(out.data(), batch, q_heads, head_dim));
                    });
                }
                if (m == "fp16") fp16_time = t;
                const double gbs = bytes / t / 1e9;
                fmt::print("{:>6} {:>5} {:<12} {:>10.3f} {:>11.1f} {:>8.2f} {:>8.0f}% {:>9.2f}x\n", ctx, batch, m, t * 1e3,
                           bytes / 1e6, gbs, 100.0 * bytes / t / stream_bw, fp16_time > 0 ? fp16_time / t : 0.0);
                std::fflush(stdout);
                rows.push_back({m, ctx, batch, t, bytes});
                js.add(fmt::format(R"({{"kind":"decode","method":"{}","context":{},"batch":{},"seconds":{:.6g},"bytes":{:.0f},"gb_per_s":{:.4g},"fraction_of_stream":{:.4g},"speedup_vs_fp16":{:.4g}}})",
                                   m, ctx, batch, t, bytes, gbs, bytes / t / stream_bw, fp16_time > 0 ? fp16_time / t : 0.0));
            }
        }
    return rows;
}

void bench_flush(json_writer& js) {
    fmt::print("\n== append and window flush (batch 1, 4K-token context, R = 128) ==\n");
    for (const std::string m : {"kivi-2", "patternkv-2", "patternkv-4"}) {
        patternkv::config c = method_config(m);
        const std::int64_t ctx = 4096, extra = 128 * 8;
        patternkv::layer_cache cache(c, 1, ctx + extra);
        const auto k = pseudo_random(static_cast<std::size_t>(ctx + extra) * kv_heads * head_dim, 1, 2.0f);
        const auto v = pseudo_random(k.size(), 2, 2.0f);
        cache.prefill(0, patternkv::view_f32(k.data(), ctx, kv_heads, head_dim), patternkv::view_f32(v.data(), ctx, kv_heads, head_dim));
        double plain = 0.0, flush = 0.0;
        int nplain = 0, nflush = 0;
        for (std::int64_t t = ctx; t < ctx + extra; ++t) {
            const std::size_t off = static_cast<std::size_t>(t) * kv_heads * head_dim;
            const bool flushes = (cache.size(0) + 1) % 128 == 0;
            const double t0 = pkv_bench::now_seconds();
            cache.append(patternkv::view_f32(k.data() + off, 1, kv_heads, head_dim), patternkv::view_f32(v.data() + off, 1, kv_heads, head_dim));
            const double dt = pkv_bench::now_seconds() - t0;
            (flushes ? flush : plain) += dt;
            ++(flushes ? nflush : nplain);
        }
        const double per_token = (plain + flush) / static_cast<double>(extra);
        fmt::print("{:<12} append {:8.2f} us, append+flush {:9.1f} us, amortized {:7.2f} us/token (bank {} patterns)\n", m,
                   plain / nplain * 1e6, flush / nflush * 1e6, per_token * 1e6, cache.bank_size(0, 0, false));
        js.add(fmt::format(R"({{"kind":"flush","method":"{}","append_us":{:.4g},"append_with_flush_us":{:.4g},"amortized_us_per_token":{:.4g}}})",
                           m, plain / nplain * 1e6, flush / nflush * 1e6, per_token * 1e6));
    }
}

// Rows [T][heads][d] drawn around `centres` random centres per head (the structure pattern mining
// expects; not real data): centre ~ N(0, 1.5^2) per coordinate, plus N(0, 0.5^2) noise.
std::vector<float> clustered(int T, int heads, int d, int centres, std::uint64_t seed) {
    const auto c = pseudo_random(static_cast<std::size_t>(heads) * centres * d, seed, 2.5f);
    const auto noise = pseudo_random(static_cast<std::size_t>(T) * heads * d, seed + 1, 0.8f);
    std::vector<float> x(noise.size());
    for (int t = 0; t < T; ++t)
        for (int h = 0; h < heads; ++h) {
            const auto pick = static_cast<std::size_t>(patternkv::core::counter_hash(seed, 7, static_cast<std::uint64_t>(t), static_cast<std::uint64_t>(h)) %
                                                       static_cast<std::uint64_t>(centres));
            for (int j = 0; j < d; ++j) {
                const std::size_t i = (static_cast<std::size_t>(t) * heads + h) * d + j;
                x[i] = c[(static_cast<std::size_t>(h) * centres + pick) * d + j] + noise[i];
            }
        }
    return x;
}

void bench_prefill(const options& o, json_writer& js) {
    const int T = 4096;
    fmt::print("\n== prefill at {} tokens: cache work (k-means + quantization) vs the prefill attention it accompanies ==\n", T);
    const auto q = pseudo_random(static_cast<std::size_t>(T) * q_heads * head_dim, 3, 1.0f);
    const std::vector<std::pair<std::string, std::pair<std::vector<float>, std::vector<float>>>> inputs = {
        {"uniform noise", {pseudo_random(static_cast<std::size_t>(T) * kv_heads * head_dim, 4, 2.0f),
                           pseudo_random(static_cast<std::size_t>(T) * kv_heads * head_dim, 5, 2.0f)}},
        {"clustered", {clustered(T, kv_heads, head_dim, 48, 40), clustered(T, kv_heads, head_dim, 48, 50)}},
    };
    std::vector<float> out(q.size());
    const int reps = o.quick ? 1 : 3;
    const auto& [k0, v0] = inputs[0].second;
    const double attn = median_seconds(reps, [&] {
        pkv_bench::dense_prefill_attention(T, q_heads, kv_heads, head_dim, q.data(), k0.data(), v0.data(), out.data());
    });
    fmt::print("dense causal attention (fp32)         {:9.1f} ms\n", attn * 1e3);
    for (const auto& [input, kv] : inputs)
        for (const std::string m : {"kivi-2", "patternkv-2"}) {
            patternkv::layer_cache cache(method_config(m), 1, T);  // allocation is not cache work
            const double t = median_seconds(reps, [&] {
                cache.reset(0);
                cache.prefill(0, patternkv::view_f32(kv.first.data(), T, kv_heads, head_dim),
                              patternkv::view_f32(kv.second.data(), T, kv_heads, head_dim));
            });
            fmt::print("{:<13} {:<20} {:9.1f} ms  = {:5.1f}% of the attention\n", input, m + " cache work", t * 1e3, 100.0 * t / attn);
            js.add(fmt::format(R"({{"kind":"prefill","input":"{}","method":"{}","tokens":{},"seconds":{:.6g},"attention_seconds":{:.6g},"fraction":{:.4g}}})",
                               input, m, T, t, attn, t / attn));
        }
}

void bench_threads(json_writer& js) {
    fmt::print("\n== thread scaling: patternkv-2 decode, 16K context, batch 1 ==\n");
    const patternkv::layer_cache cache = make_cache("patternkv-2", 1, 16384);
    const auto q = pseudo_random(static_cast<std::size_t>(q_heads) * head_dim, 9, 1.0f);
    std::vector<float> out(q.size());
    double t1 = 0.0;
    for (int threads : {1, 2}) {
        tbb::global_control limit(tbb::global_control::max_allowed_parallelism, static_cast<std::size_t>(threads));
        tbb::task_arena arena(threads);
        const double t = arena.execute([&] {
            return median_seconds(7, [&] {
                cache.attend(patternkv::view_f32(q.data(), 1, q_heads, head_dim), patternkv::view_f32(out.data(), 1, q_heads, head_dim));
            });
        });
        if (threads == 1) t1 = t;
        fmt::print("{} thread{}: {:8.3f} ms  speedup {:.2f}x\n", threads, threads > 1 ? "s" : " ", t * 1e3, t1 / t);
        js.add(fmt::format(R"({{"kind":"threads","threads":{},"seconds":{:.6g},"speedup":{:.4g}}})", threads, t, t1 / t));
    }
}

void usage() {
    fmt::print(
        "usage: patternkv-bench [--quick] [--json FILE] [--contexts 1024,4096,...] [--batches 1,8]\n"
        "                       [--only decode,flush,prefill,threads]\n"
        "  Measures, in one run: read bandwidth, decode attention of fp32/fp16 baselines, KIVI and PatternKV\n"
        "  at 2 and 4 bits, append/flush cost, prefill cost against prefill attention, thread scaling.\n"
        "  --quick: contexts 1K-64K at batch 1 and 1K-4K at batch 8, fewer repetitions (< 2 minutes).\n");
}

template <class T>
std::vector<T> parse_list(const std::string& s) {
    std::vector<T> out;
    std::size_t pos = 0;
    while (pos <= s.size()) {
        const std::size_t comma = s.find(',', pos);
        out.push_back(static_cast<T>(std::stoll(s.substr(pos, comma - pos))));
        if (comma == std::string::npos) break;
        pos = comma + 1;
    }
    return out;
}

} // namespace

int main(int argc, char** argv) {
    options o;
    try {
        for (int i = 1; i < argc; ++i) {
            const std::string a = argv[i];
            const auto next = [&]() -> std::string {
                if (i + 1 >= argc) throw std::runtime_error(a + " needs a value");
                return argv[++i];
            };
            if (a == "--quick") o.quick = true;
            else if (a == "--json") o.json = next();
            else if (a == "--contexts") o.contexts = parse_list<std::int64_t>(next());
            else if (a == "--batches") o.batches = parse_list<int>(next());
            else if (a == "--only") o.only = next();
            else if (a == "--help" || a == "-h") return usage(), 0;
            else throw std::runtime_error("unknown argument " + a);
        }
    } catch (const std::exception& e) {
        fmt::print(stderr, "patternkv-bench: {}\n", e.what());
        usage();
        return 2;
    }
    json_writer js;
    fmt::print("patternkv-bench: {} hardware threads, AVX2 kernels {}\n", tbb::this_task_arena::max_concurrency(),
               patternkv::simd::have_avx2() ? "on" : "off");
    const double bw = pkv_bench::stream_read_bandwidth(std::size_t{1} << 30, o.quick ? 3 : 5);
    fmt::print("read bandwidth (STREAM-like sum over 1 GiB): {:.2f} GB/s\n", bw / 1e9);
    js.add(fmt::format(R"({{"kind":"stream","gb_per_s":{:.4g}}})", bw / 1e9));
    try {
        if (o.runs("decode")) bench_decode(o, bw, js);
        if (o.runs("flush")) bench_flush(js);
        if (o.runs("prefill")) bench_prefill(o, js);
        if (o.runs("threads")) bench_threads(js);
    } catch (const std::exception& e) {
        fmt::print(stderr, "patternkv-bench: {}\n", e.what());
        return 1;
    }
    if (!o.json.empty()) {
        std::ofstream f(o.json);
        f << "{\"machine_threads\":" << tbb::this_task_arena::max_concurrency() << ",\"results\":[\n";
        for (std::size_t i = 0; i < js.items.size(); ++i) f << "  " << js.items[i] << (i + 1 < js.items.size() ? ",\n" : "\n");
        f << "]}\n";
        if (!f) {
            fmt::print(stderr, "patternkv-bench: cannot write {}\n", o.json);
            return 1;
        }
        fmt::print("\nwrote {}\n", o.json);
    }
    return 0;
}

// patternkv-bench: decode-attention speed of every cache method against dense fp32/fp16 baselines
// measured in the same run, the machine's read bandwidth, flush and prefill costs, and thread
// scaling. Ratios, not absolute times, are the results (these machines are noisy).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <optional>
#include <stdexcept>
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
    /// decode methods: fp32, fp16 (always run: the baseline), kivi-B, patternkv-B for B in 2, 3, 4, 8
    std::vector<std::string> methods{"fp32", "fp16", "kivi-2", "kivi-4", "patternkv-2", "patternkv-4"};
    bool runs(const char* part) const {
        return only.empty() || ("," + only + ",").find(std::string(",") + part + ",") != std::string::npos;
    }
};

constexpr int kv_heads = 8, q_heads = 32, head_dim = 128;

struct json_writer {
    std::vector<std::string> items;
    void add(const std::string& obj) { items.push_back(obj); }
};

patternkv::config method_config(const std::string& m) {
    const int bits = m.back() - '0';
    patternkv::config c = m.rfind("kivi", 0) == 0       ? patternkv::kivi_config(bits)
                          : m.rfind("pertoken", 0) == 0 ? patternkv::per_token_config(bits)
                                                        : patternkv::patternkv_config(bits);
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

// One method's cache for a decode cell: a dense baseline or a library cache.
struct decode_subject {
    std::string method;
    std::optional<pkv_bench::dense_cache> dense;
    std::optional<patternkv::layer_cache> cache;
    double bytes = 0.0;
    std::vector<double> times;
};

// Rounds of a decode cell: at least 11 (9 at 64K and beyond, whose steps are long), and more where
// a round is short, so that a cell is measured for about 0.3 s: a median of 11 sub-millisecond steps
// moved by a few percent from run to run, which is the size of the gaps this table is read for.
int rounds_for(std::int64_t ctx, double round_seconds) {
    const int least = ctx >= 65536 ? 9 : 11;
    const double wanted = 0.3 / std::max(round_seconds, 1e-6);
    return static_cast<int>(std::clamp(wanted, static_cast<double>(least), 401.0));
}

// Tokens beyond the context that every cell's caches hold: half a window (R = 128). A context of
// whole pages would leave KIVI's fp16 window empty and PatternKV's (one sink row, then 127 rows)
// nearly full; decode sees every fill from 1 to R, 64 on average, so every method is measured there.
constexpr std::int64_t window_fill = 64;

void bench_decode(const options& o, double stream_bw, double fma_peak, json_writer& js) {
    const std::vector<std::string>& methods = o.methods;
    for (const bool half : {false, true})
        if (const double e = pkv_bench::dense_baseline_error(half); !(e < 1e-4))
            throw std::runtime_error(fmt::format("dense {} baseline self-check failed: relative error {:.3g}", half ? "fp16" : "fp32", e));
    fmt::print(
        "\n== decode attention, {} KV heads x head_dim {}, GQA {} (one query token per sequence; ctx + {} tokens cached:\n"
        "   a half-full window, the mean a decode step sees) ==\n",
        kv_heads, head_dim, q_heads / kv_heads, window_fill);
    fmt::print(
        "methods run round-robin, median of the rounds; %fma = multiply-adds per second / the fp32 FMA peak;\n"
        "floor = the roofline time: max(bytes / read bandwidth, multiply-adds / FMA peak) for fp32/fp16, whose\n"
        "multiply-adds are fp32 FMAs; bytes / read bandwidth for the quantized methods, whose per-element\n"
        "multiply-adds are int8/int16 dot products (docs/bit-exactness.md), so their %fma can pass 100%\n");
    fmt::print("{:>6} {:>5} {:<12} {:>9} {:>9} {:>7} {:>8} {:>5} {:>9} {:>8}\n", "ctx", "batch", "method", "ms/step", "cache MB", "GB/s",
               "%stream", "%fma", "floor ms", "vs fp16");
    for (int batch : o.batches)
        for (const std::int64_t ctx : o.contexts) {
            if (o.quick && batch > 1 && ctx > 4096) continue;
            const std::int64_t tokens = ctx + window_fill;
            const auto q = pseudo_random(static_cast<std::size_t>(batch) * q_heads * head_dim, 99, 1.0f);
            std::vector<float> out(q.size());
            std::vector<decode_subject> subjects;
            for (const auto& m : methods) {
                decode_subject& sub = subjects.emplace_back(decode_subject{m, {}, {}, 0.0, {}});
                if (m == "fp32" || m == "fp16") {
                    sub.dense = pkv_bench::make_dense_cache({batch, kv_heads, q_heads, head_dim, tokens}, m == "fp16", 7);
                    sub.bytes = static_cast<double>(sub.dense->bytes());
                } else {
                    sub.cache.emplace(make_cache(m, batch, tokens));
                    sub.bytes = static_cast<double>(sub.cache->memory().total_bytes());
                }
            }
            const auto step = [&](const decode_subject& sub) {
                if (sub.dense) return pkv_bench::dense_decode_attention(*sub.dense, q.data(), out.data());
                sub.cache->attend(patternkv::view_f32(q.data(), batch, q_heads, head_dim),
                                  patternkv::view_f32(out.data(), batch, q_heads, head_dim));
            };
            const double warm_start = pkv_bench::now_seconds();
            for (auto& sub : subjects) step(sub);  // warms up, and times one round
            const int rounds = rounds_for(ctx, pkv_bench::now_seconds() - warm_start);
            for (int r = 0; r < rounds; ++r)
                for (auto& sub : subjects) {
                    const double t0 = pkv_bench::now_seconds();
                    step(sub);
                    sub.times.push_back(pkv_bench::now_seconds() - t0);
                }
            const double fmas = 2.0 * static_cast<double>(batch) * static_cast<double>(tokens) * kv_heads * head_dim * (q_heads / kv_heads);
            for (auto& sub : subjects) std::sort(sub.times.begin(), sub.times.end());
            const auto median = [](const decode_subject& sub) { return sub.times[sub.times.size() / 2]; };
            const double fp16_time =
                median(*std::find_if(subjects.begin(), subjects.end(), [](const decode_subject& sub) { return sub.method == "fp16"; }));
            for (const auto& sub : subjects) {
                const double t = median(sub);
                const bool fp32_math = sub.dense.has_value();
                const double gbs = sub.bytes / t / 1e9,
                             floor = std::max(sub.bytes / stream_bw, fp32_math && fma_peak > 0 ? fmas / fma_peak : 0.0);
                const double fma_share = fma_peak > 0 ? fmas / t / fma_peak : 0.0, speedup = fp16_time / t;
                fmt::print("{:>6} {:>5} {:<12} {:>9.3f} {:>9.1f} {:>7.2f} {:>7.0f}% {:>4.0f}% {:>9.3f} {:>7.2f}x\n", ctx, batch, sub.method,
                           t * 1e3, sub.bytes / 1e6, gbs, 100.0 * sub.bytes / t / stream_bw, 100.0 * fma_share, floor * 1e3, speedup);
                js.add(fmt::format(
                    R"({{"kind":"decode","method":"{}","context":{},"batch":{},"seconds":{:.6g},"bytes":{:.0f},"gb_per_s":{:.4g},"fraction_of_stream":{:.4g},"fraction_of_fma_peak":{:.4g},"roofline_seconds":{:.6g},"speedup_vs_fp16":{:.4g}}})",
                    sub.method, ctx, batch, t, sub.bytes, gbs, sub.bytes / t / stream_bw, fma_share, floor, speedup));
            }
            std::fflush(stdout);
        }
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
            const bool flushes = cache.size(0) - cache.quantized_size(0) == 128;  // a full window flushes on the next append
            const double t0 = pkv_bench::now_seconds();
            cache.append(patternkv::view_f32(k.data() + off, 1, kv_heads, head_dim),
                         patternkv::view_f32(v.data() + off, 1, kv_heads, head_dim));
            const double dt = pkv_bench::now_seconds() - t0;
            (flushes ? flush : plain) += dt;
            ++(flushes ? nflush : nplain);
        }
        const double per_token = (plain + flush) / static_cast<double>(extra);
        fmt::print("{:<12} append {:8.2f} us, append+flush {:9.1f} us, amortized {:7.2f} us/token (banks K {}, V {} patterns)\n", m,
                   plain / nplain * 1e6, flush / nflush * 1e6, per_token * 1e6, cache.bank_size(0, 0, false), cache.bank_size(0, 0, true));
        js.add(fmt::format(
            R"({{"kind":"flush","method":"{}","append_us":{:.4g},"append_with_flush_us":{:.4g},"amortized_us_per_token":{:.4g}}})", m,
            plain / nplain * 1e6, flush / nflush * 1e6, per_token * 1e6));
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
            const auto pick = static_cast<std::size_t>(
                patternkv::core::counter_hash(seed, 7, static_cast<std::uint64_t>(t), static_cast<std::uint64_t>(h)) %
                static_cast<std::uint64_t>(centres));
            for (int j = 0; j < d; ++j) {
                const std::size_t i = (static_cast<std::size_t>(t) * heads + h) * d + j;
                x[i] = c[(static_cast<std::size_t>(h) * centres + pick) * d + j] + noise[i];
            }
        }
    return x;
}

void bench_prefill(const options& o, double fma_peak, json_writer& js) {
    const int T = 4096;
    fmt::print("\n== prefill at {} tokens: cache work (k-means + quantization) vs the prefill attention it accompanies ==\n", T);
    const auto q = pseudo_random(static_cast<std::size_t>(T) * q_heads * head_dim, 3, 1.0f);
    const std::vector<std::pair<std::string, std::pair<std::vector<float>, std::vector<float>>>> inputs = {
        {"uniform noise",
         {pseudo_random(static_cast<std::size_t>(T) * kv_heads * head_dim, 4, 2.0f),
          pseudo_random(static_cast<std::size_t>(T) * kv_heads * head_dim, 5, 2.0f)}},
        {"clustered", {clustered(T, kv_heads, head_dim, 48, 40), clustered(T, kv_heads, head_dim, 48, 50)}},
    };
    std::vector<float> out(q.size());
    const int reps = o.quick ? 1 : 3;
    const auto& [k0, v0] = inputs[0].second;
    const double attn = median_seconds(
        reps, [&] { pkv_bench::dense_prefill_attention(T, q_heads, kv_heads, head_dim, q.data(), k0.data(), v0.data(), out.data()); });
    const double fmas = static_cast<double>(T) * (T + 1) / 2.0 * q_heads * head_dim * 2.0;
    fmt::print("dense causal attention (fp32)         {:9.1f} ms  ({:.0f}% of the FMA peak)\n", attn * 1e3,
               fma_peak > 0 ? 100.0 * fmas / attn / fma_peak : 0.0);
    for (const auto& [input, kv] : inputs)
        for (const std::string m : {"kivi-2", "patternkv-2"}) {
            patternkv::layer_cache cache(method_config(m), 1, T);  // allocation is not cache work
            const double t = median_seconds(reps, [&] {
                cache.reset(0);
                cache.prefill(0, patternkv::view_f32(kv.first.data(), T, kv_heads, head_dim),
                              patternkv::view_f32(kv.second.data(), T, kv_heads, head_dim));
            });
            fmt::print("{:<13} {:<20} {:9.1f} ms  = {:5.1f}% of the attention\n", input, m + " cache work", t * 1e3, 100.0 * t / attn);
            js.add(fmt::format(
                R"({{"kind":"prefill","input":"{}","method":"{}","tokens":{},"seconds":{:.6g},"attention_seconds":{:.6g},"fraction":{:.4g}}})",
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
        "                       [--only decode,flush,prefill,threads] [--methods fp16,kivi-3,patternkv-3,...]\n"
        "  Measures, in one run: read bandwidth, decode attention of fp32/fp16 baselines, KIVI and PatternKV\n"
        "  at 2 and 4 bits, append/flush cost, prefill cost against prefill attention, thread scaling.\n"
        "  --quick: contexts 1K-64K at batch 1 and 1K-4K at batch 8, fewer repetitions (< 2 minutes).\n"
        "  --methods: the decode methods (fp32, fp16, kivi-B, pertoken-B (KIVI with per-token K), patternkv-B, B in 2, 3, 4, 8);\n"
        "  fp16 always runs.\n");
}

// The --methods list, checked, with the fp16 baseline added when missing.
std::vector<std::string> decode_methods(const std::string& list) {
    std::vector<std::string> out;
    std::size_t at = 0;
    while (at <= list.size()) {
        const std::size_t end = std::min(list.find(',', at), list.size());
        const std::string m = list.substr(at, end - at);
        const bool quantized = (m.rfind("kivi-", 0) == 0 && m.size() == 6) || (m.rfind("pertoken-", 0) == 0 && m.size() == 10) ||
                               (m.rfind("patternkv-", 0) == 0 && m.size() == 11);
        if (m != "fp32" && m != "fp16" && !(quantized && std::string("2348").find(m.back()) != std::string::npos))
            throw std::runtime_error("--methods: unknown method '" + m +
                                     "' (fp32, fp16, kivi-B, pertoken-B, patternkv-B with B in 2, 3, 4, 8)");
        out.push_back(m);
        at = end + 1;
    }
    if (std::find(out.begin(), out.end(), "fp16") == out.end()) out.insert(out.begin(), "fp16");
    return out;
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

}  // namespace

int main(int argc, char** argv) {
    options o;
    try {
        for (int i = 1; i < argc; ++i) {
            const std::string a = argv[i];
            const auto next = [&]() -> std::string {
                if (i + 1 >= argc) throw std::runtime_error(a + " needs a value");
                return argv[++i];
            };
            if (a == "--quick")
                o.quick = true;
            else if (a == "--json")
                o.json = next();
            else if (a == "--contexts")
                o.contexts = parse_list<std::int64_t>(next());
            else if (a == "--batches")
                o.batches = parse_list<int>(next());
            else if (a == "--only")
                o.only = next();
            else if (a == "--methods")
                o.methods = decode_methods(next());
            else if (a == "--help" || a == "-h")
                return usage(), 0;
            else
                throw std::runtime_error("unknown argument " + a);
        }
    } catch (const std::exception& e) {
        fmt::print(stderr, "patternkv-bench: {}\n", e.what());
        usage();
        return 2;
    }
    json_writer js;
    // the quantized methods use the widest kernels the CPU has; the dense baselines are AVX2 (they are
    // bandwidth-bound: fp16 reads at 55-65% of STREAM with 8-wide FMAs)
    const char* kernels = patternkv::simd::have_amx()      ? "AVX-512 VNNI + AMX-INT8 code sums (dense baselines: AVX2)"
                          : patternkv::simd::have_avx512() ? "AVX-512 VNNI (dense baselines: AVX2)"
                          : patternkv::simd::have_avx2()   ? "AVX2"
                                                           : "scalar";
    fmt::print("patternkv-bench: {} hardware threads, {} kernels\n", tbb::this_task_arena::max_concurrency(), kernels);
    const double bw = pkv_bench::stream_read_bandwidth(std::size_t{1} << 30, o.quick ? 3 : 5);
    const double fma = pkv_bench::fma_peak();
    fmt::print("read bandwidth (STREAM-like sum over 1 GiB): {:.2f} GB/s\n", bw / 1e9);
    fmt::print("FMA peak (8-wide FMA chains on every thread): {:.1f} G multiply-adds/s\n", fma / 1e9);
    js.add(fmt::format(R"({{"kind":"machine","threads":{},"kernels":"{}"}})", tbb::this_task_arena::max_concurrency(), kernels));
    js.add(fmt::format(R"({{"kind":"stream","gb_per_s":{:.4g}}})", bw / 1e9));
    js.add(fmt::format(R"({{"kind":"fma_peak","gfma_per_s":{:.4g}}})", fma / 1e9));
    try {
        if (o.runs("decode")) bench_decode(o, bw, fma, js);
        if (o.runs("flush")) bench_flush(js);
        if (o.runs("prefill")) bench_prefill(o, fma, js);
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

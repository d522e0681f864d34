// Decode-attention timing on one backend through the public API (used by tests/device/run.sh when
// bench/ has no GPU benchmark). One sequence, Llama-3-8B-like layer (d 128, 8 KV heads, 32 query
// heads), PatternKV or KIVI at 2 bits; for each context: prefill random K/V, 3 warm-up attends,
// then `reps` timed attends (wall clock, host to host: query upload and output download included).
// Effective bandwidth = bytes the cache stores (memory_report::total_bytes) / median time.
//   attend_bench [--backend cuda|hip|cpu] [--method patternkv|kivi] [--contexts 1024,4096]
//                [--reps N] [--peak-tbps 4.8] [--json FILE]
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include <patternkv/patternkv.hpp>

namespace {

std::vector<float> normals(std::uint64_t seed, std::size_t n) {
    std::mt19937_64 gen(seed);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    std::vector<float> v(n);
    for (auto& x : v) x = normal(gen);
    return v;
}

std::vector<long> parse_list(const std::string& s) {
    std::vector<long> out;
    std::size_t pos = 0;
    while (pos < s.size()) {
        const std::size_t comma = s.find(',', pos);
        out.push_back(std::stol(s.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos)));
        if (comma == std::string::npos) break;
        pos = comma + 1;
    }
    return out;
}

}  // namespace

int main(int argc, char** argv) {
    std::string backend_name = "cuda", method = "patternkv", json;
    std::vector<long> contexts{1024, 4096, 16384, 65536};
    int reps = 20;
    double peak_tbps = 4.8;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        const std::string v = i + 1 < argc ? argv[i + 1] : "";
        if (a == "--backend")
            backend_name = v, ++i;
        else if (a == "--method")
            method = v, ++i;
        else if (a == "--contexts")
            contexts = parse_list(v), ++i;
        else if (a == "--reps")
            reps = std::max(1, std::atoi(v.c_str())), ++i;
        else if (a == "--peak-tbps")
            peak_tbps = std::atof(v.c_str()), ++i;
        else if (a == "--json")
            json = v, ++i;
        else {
            std::fprintf(stderr,
                         "usage: attend_bench [--backend cuda|hip|cpu] [--method patternkv|kivi] [--contexts N,...] "
                         "[--reps N] [--peak-tbps X] [--json FILE]\n");
            return 2;
        }
    }
    const patternkv::backend where = backend_name == "cuda"  ? patternkv::backend::cuda
                                     : backend_name == "hip" ? patternkv::backend::hip
                                                             : patternkv::backend::cpu;
    if (const std::string why = patternkv::backend_unavailable_reason(where); !why.empty()) {
        std::fprintf(stderr, "backend %s unavailable: %s\n", backend_name.c_str(), why.c_str());
        return 77;
    }
    patternkv::config c = method == "kivi" ? patternkv::kivi_config(2) : patternkv::patternkv_config(2);
    c.head_dim = 128;
    c.num_kv_heads = 8;
    c.num_q_heads = 32;
    const int H = c.num_kv_heads, d = c.head_dim, Hq = c.num_q_heads;

    std::string rows;
    std::printf("%-10s %-9s %9s %12s %12s %12s %10s %8s\n", "backend", "method", "context", "prefill_ms", "attend_us", "cache_bytes",
                "GB/s", "%peak");
    for (const long T : contexts) {
        patternkv::layer_cache cache(c, 1, T + 1, where);
        const auto k = normals(1 + T, static_cast<std::size_t>(T) * H * d), v = normals(2 + T, static_cast<std::size_t>(T) * H * d);
        const auto t0 = std::chrono::steady_clock::now();
        cache.prefill(0, patternkv::view_f32(k.data(), T, H, d), patternkv::view_f32(v.data(), T, H, d));
        const double prefill_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
        const auto q = normals(3, static_cast<std::size_t>(Hq) * d);
        std::vector<float> out(q.size());
        const auto attend = [&] { cache.attend(patternkv::view_f32(q.data(), 1, Hq, d), patternkv::view_f32(out.data(), 1, Hq, d)); };
        for (int i = 0; i < 3; ++i) attend();
        std::vector<double> us;
        for (int i = 0; i < reps; ++i) {
            const auto a = std::chrono::steady_clock::now();
            attend();
            us.push_back(std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - a).count());
        }
        std::sort(us.begin(), us.end());
        const double med = us[us.size() / 2];
        const double bytes = static_cast<double>(cache.memory().total_bytes());
        const double gbps = bytes / (med * 1e-6) / 1e9;
        const double pct = 100.0 * gbps / (peak_tbps * 1e3);
        std::printf("%-10s %-9s %9ld %12.1f %12.1f %12.0f %10.2f %8.3f\n", backend_name.c_str(), method.c_str(), T, prefill_ms, med, bytes,
                    gbps, pct);
        std::fflush(stdout);
        char buf[512];
        std::snprintf(buf, sizeof buf,
                      "%s{\"backend\":\"%s\",\"method\":\"%s\",\"context\":%ld,\"prefill_ms\":%.3f,\"attend_us_median\":%.3f,"
                      "\"attend_us_min\":%.3f,\"cache_bytes\":%.0f,\"gbps\":%.4f,\"percent_of_peak\":%.4f}",
                      rows.empty() ? "" : ",\n  ", backend_name.c_str(), method.c_str(), T, prefill_ms, med, us.front(), bytes, gbps, pct);
        rows += buf;
    }
    if (!json.empty()) {
        if (FILE* f = std::fopen(json.c_str(), "w")) {
            std::fprintf(f, "{\"peak_tbps\":%.2f,\"reps\":%d,\"rows\":[\n  %s\n]}\n", peak_tbps, reps, rows.c_str());
            std::fclose(f);
        }
    }
    return 0;
}

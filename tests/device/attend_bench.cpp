// Decode-attention timing on one backend through the public API, for tests/device/run.sh.
// For each method, context and batch: a CPU cache of `batch` sequences of `context` random tokens
// (Llama-3-8B-like layer: d 128, 8 KV heads, 32 query heads) is saved once and loaded onto the
// backend as several caches, rotated so their bytes pass twice the L2 (at least 4), so every attend
// reads its cache from memory. Two timings per row, medians over the reps:
//   end to end: attend() wall clock, host to host (query upload, output download);
//   kernel:     the attend kernels' device time (PATTERNKV_GPU_PROFILE, backends/gpu/runtime.hpp:
//               launch_timer), summed per attend; per-kernel totals go to the JSON;
//   device:     (built with -DPKV_BENCH_CUDA and cudart) attends with device views (query and output
//               in device memory, layer_cache.hpp's device-resident calls) enqueued back to back on
//               one stream, one synchronize at the end, per attend; first checked bit for bit
//               against the host-view attend of the same cache (dev_bits: same / DIFF).
// GB/s = bytes the cache stores (memory_report::total_bytes) / time. Rows are printed and the JSON
// rewritten as each finishes, so a run cut short keeps what it measured.
//   attend_bench [--backend cuda|hip|cpu] [--methods patternkv-2,kivi-2,...] [--contexts 16384,65536]
//                [--batches 1,8] [--reps N] [--l2-mb 60] [--peak-tbps 4.8] [--json FILE]
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <random>
#include <string>
#include <vector>

#include <unistd.h>

#include <patternkv/patternkv.hpp>

#if defined(PKV_BENCH_CUDA)
#include <cuda_runtime_api.h>
#endif

namespace {

std::vector<float> normals(std::uint64_t seed, std::size_t n) {
    std::mt19937_64 gen(seed);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    std::vector<float> v(n);
    for (auto& x : v) x = normal(gen);
    return v;
}

std::vector<std::string> split(const std::string& s) {
    std::vector<std::string> out;
    std::size_t pos = 0;
    while (pos <= s.size()) {
        const std::size_t comma = s.find(',', pos);
        out.push_back(s.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos));
        if (comma == std::string::npos) break;
        pos = comma + 1;
    }
    return out;
}

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

// "patternkv-2" -> the method's config at 2 bits, shaped like a Llama-3-8B layer.
patternkv::config method_config(const std::string& m) {
    const std::size_t dash = m.rfind('-');
    const int bits = dash == std::string::npos ? 2 : std::atoi(m.c_str() + dash + 1);
    const std::string name = m.substr(0, dash);
    patternkv::config c = name == "kivi" ? patternkv::kivi_config(bits) : patternkv::patternkv_config(bits);
    if (name != "kivi" && name != "patternkv") throw patternkv::error("attend_bench: unknown method " + m + " (patternkv-B or kivi-B)");
    c.head_dim = 128;
    c.num_kv_heads = 8;
    c.num_q_heads = 32;
    return c;
}

// Each kernel's device milliseconds in a profile file (lines "name ms"), summed.
std::map<std::string, double> read_profile(const std::string& path) {
    std::map<std::string, double> ms;
    std::ifstream in(path);
    std::string name;
    double t = 0.0;
    while (in >> name >> t) ms[name] += t;
    return ms;
}

#if defined(PKV_BENCH_CUDA)
void cuda_check(cudaError_t e, const char* what) {
    if (e != cudaSuccess) throw patternkv::error(std::string("attend_bench: ") + what + ": " + cudaGetErrorString(e));
}

/// Device-view attends over `caches` (query and output in device memory, on one stream): whether
/// the first one's output equals `host_out` bit for bit, and the microseconds per attend of `reps`
/// enqueued back to back.
std::pair<bool, double> device_view_attends(std::vector<patternkv::layer_cache>& caches, const std::vector<float>& q,
                                            const std::vector<float>& host_out, int B, int Hq, int d, int reps) {
    float *dq = nullptr, *dout = nullptr;
    cudaStream_t stream = nullptr;
    const std::size_t bytes = q.size() * sizeof(float);
    cuda_check(cudaMalloc(reinterpret_cast<void**>(&dq), bytes), "cudaMalloc");
    cuda_check(cudaMalloc(reinterpret_cast<void**>(&dout), bytes), "cudaMalloc");
    cuda_check(cudaStreamCreate(&stream), "cudaStreamCreate");
    cuda_check(cudaMemcpy(dq, q.data(), bytes, cudaMemcpyHostToDevice), "cudaMemcpy");
    for (auto& c : caches) c.set_stream(stream);
    const auto attend = [&](patternkv::layer_cache& c) {
        c.attend(patternkv::view_f32(dq, B, Hq, d).on_device(), patternkv::view_f32(dout, B, Hq, d).on_device());
    };
    attend(caches[0]);
    caches[0].synchronize();
    std::vector<float> got(q.size());
    cuda_check(cudaMemcpy(got.data(), dout, bytes, cudaMemcpyDeviceToHost), "cudaMemcpy");
    const bool same = std::memcmp(got.data(), host_out.data(), bytes) == 0;
    for (auto& c : caches) attend(c);  // warm-up
    caches[0].synchronize();
    const auto a = std::chrono::steady_clock::now();
    for (int i = 0; i < reps; ++i) attend(caches[static_cast<std::size_t>(i) % caches.size()]);
    caches[0].synchronize();
    const double us = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - a).count() / reps;
    for (auto& c : caches) c.set_stream(nullptr);
    cudaStreamDestroy(stream);
    cudaFree(dq);
    cudaFree(dout);
    return {same, us};
}
#endif

}  // namespace

int main(int argc, char** argv) {
    std::string backend_name = "cuda", json;
    std::vector<std::string> methods{"kivi-2", "patternkv-2", "kivi-4", "patternkv-4"};
    std::vector<std::string> contexts{"16384", "65536"}, batches{"1", "8"};
    int reps = 20;
    double peak_tbps = 4.8, l2_mb = 60.0;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        const std::string v = i + 1 < argc ? argv[i + 1] : "";
        if (a == "--backend")
            backend_name = v, ++i;
        else if (a == "--methods")
            methods = split(v), ++i;
        else if (a == "--contexts")
            contexts = split(v), ++i;
        else if (a == "--batches")
            batches = split(v), ++i;
        else if (a == "--reps")
            reps = std::max(3, std::atoi(v.c_str())), ++i;
        else if (a == "--l2-mb")
            l2_mb = std::atof(v.c_str()), ++i;
        else if (a == "--peak-tbps")
            peak_tbps = std::atof(v.c_str()), ++i;
        else if (a == "--json")
            json = v, ++i;
        else {
            std::fprintf(stderr,
                         "usage: attend_bench [--backend cuda|hip|cpu] [--methods patternkv-2,kivi-2,...] [--contexts N,...] "
                         "[--batches B,...] [--reps N] [--l2-mb MB] [--peak-tbps X] [--json FILE]\n");
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
    const std::string profile = "/tmp/pkv-attend-profile-" + std::to_string(::getpid()) + ".txt";
    std::string rows;
    std::printf("%-12s %7s %5s %7s %11s %10s %9s %6s %10s %9s %6s %10s %9s %8s\n", "method", "context", "batch", "caches", "cache_MB",
                "e2e_us", "e2e_GB/s", "%peak", "kernel_us", "kern_GB/s", "%peak", "device_us", "dev_GB/s", "dev_bits");
    for (const std::string& ctx_s : contexts)
        for (const std::string& batch_s : batches)
            for (const std::string& m : methods) {
                const patternkv::config c = method_config(m);
                const long T = std::atol(ctx_s.c_str());
                const int B = std::atoi(batch_s.c_str()), H = c.num_kv_heads, d = c.head_dim, Hq = c.num_q_heads;
                // prefill on the CPU once (the GPU prefill is not what is measured), then load copies
                std::vector<std::uint8_t> image;
                {
                    patternkv::layer_cache cpu(c, B, T + 1);
                    for (int s = 0; s < B; ++s) {
                        const auto k = normals(10 + s, static_cast<std::size_t>(T) * H * d), v = normals(20 + s, k.size());
                        cpu.prefill(s, patternkv::view_f32(k.data(), T, H, d), patternkv::view_f32(v.data(), T, H, d));
                    }
                    image = patternkv::serialize_layer(cpu);
                }
                patternkv::load_options o;
                o.where = where;
                std::vector<patternkv::layer_cache> caches;
                caches.push_back(patternkv::deserialize_layer(image, o));
                const double bytes = static_cast<double>(caches[0].memory().total_bytes());
                const int n = std::max(4, static_cast<int>(std::ceil(2.0 * l2_mb * 1e6 / bytes)));
                while (static_cast<int>(caches.size()) < n) caches.push_back(patternkv::deserialize_layer(image, o));
                image.clear();
                const auto q = normals(3, static_cast<std::size_t>(B) * Hq * d);
                std::vector<float> out(q.size());
                int next = 0;
                const auto attend = [&] {
                    caches[static_cast<std::size_t>(next)].attend(patternkv::view_f32(q.data(), B, Hq, d),
                                                                  patternkv::view_f32(out.data(), B, Hq, d));
                    next = (next + 1) % n;
                };
                for (int i = 0; i < n; ++i) attend();  // warm-up: every cache once
                std::vector<double> e2e;
                for (int i = 0; i < reps; ++i) {
                    const auto a = std::chrono::steady_clock::now();
                    attend();
                    e2e.push_back(std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - a).count());
                }
                std::vector<double> kernel;
                std::map<std::string, double> per_kernel;
                for (int i = 0; i < reps && where != patternkv::backend::cpu; ++i) {
                    std::remove(profile.c_str());
                    ::setenv("PATTERNKV_GPU_PROFILE", profile.c_str(), 1);
                    attend();
                    ::unsetenv("PATTERNKV_GPU_PROFILE");
                    double sum = 0.0;
                    for (const auto& [name, ms] : read_profile(profile)) {
                        sum += ms;
                        per_kernel[name] += ms * 1e3 / reps;
                    }
                    kernel.push_back(sum * 1e3);
                }
                std::remove(profile.c_str());
                const double e2e_us = median(e2e), kernel_us = kernel.empty() ? 0.0 : median(kernel);
                double device_us = 0.0;
                const char* device_bits = "n/a";
#if defined(PKV_BENCH_CUDA)
                if (where == patternkv::backend::cuda) {
                    caches[0].attend(patternkv::view_f32(q.data(), B, Hq, d), patternkv::view_f32(out.data(), B, Hq, d));
                    const auto [same, us] = device_view_attends(caches, q, out, B, Hq, d, reps);
                    device_us = us;
                    device_bits = same ? "same" : "DIFF";
                }
#endif
                const auto gbps = [&](double us) { return us > 0.0 ? bytes / (us * 1e-6) / 1e9 : 0.0; };
                const auto pct = [&](double us) { return 100.0 * gbps(us) / (peak_tbps * 1e3); };
                std::printf("%-12s %7ld %5d %7d %11.1f %10.1f %9.1f %6.2f %10.1f %9.1f %6.2f %10.1f %9.1f %8s\n", m.c_str(), T, B, n,
                            bytes / 1e6, e2e_us, gbps(e2e_us), pct(e2e_us), kernel_us, gbps(kernel_us), pct(kernel_us), device_us,
                            gbps(device_us), device_bits);
                std::fflush(stdout);
                std::string kernels;
                for (const auto& [name, us] : per_kernel)
                    kernels += (kernels.empty() ? "" : ",") + std::string("\"") + name + "\":" + std::to_string(us);
                char buf[768];
                std::snprintf(buf, sizeof buf,
                              "%s{\"method\":\"%s\",\"context\":%ld,\"batch\":%d,\"caches\":%d,\"cache_bytes\":%.0f,"
                              "\"e2e_us\":%.3f,\"e2e_gbps\":%.3f,\"kernel_us\":%.3f,\"kernel_gbps\":%.3f,\"device_us\":%.3f,"
                              "\"device_gbps\":%.3f,\"device_bits\":\"%s\",\"kernel_us_each\":{",
                              rows.empty() ? "" : ",\n  ", m.c_str(), T, B, n, bytes, e2e_us, gbps(e2e_us), kernel_us, gbps(kernel_us),
                              device_us, gbps(device_us), device_bits);
                rows += buf + kernels + "}}";
                if (!json.empty())
                    if (std::FILE* f = std::fopen(json.c_str(), "w")) {
                        std::fprintf(f, "{\"backend\":\"%s\",\"peak_tbps\":%.2f,\"reps\":%d,\"rows\":[\n  %s\n]}\n", backend_name.c_str(),
                                     peak_tbps, reps, rows.c_str());
                        std::fclose(f);
                    }
            }
    return 0;
}

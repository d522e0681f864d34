// The program every consumer project builds (tests/consumers/run.sh copies it next to each build
// file): a tiny prefill / append / attend through the installed or subproject library, a check that
// the output is finite, and a check that the version macros match the version the build expects.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <vector>

#include <patternkv/patternkv.hpp>

// Consumers get include/ only: the library's internals must not be on their include path.
#if __has_include("core/attention.hpp") || __has_include("src/layer_cache_state.hpp") ||                     \
                                                         __has_include("reference/simd/cpu_features.hpp") || \
                                                                       __has_include("backends/gpu/backend.hpp")
#error "libpatternkv's internal headers (core/, src/, reference/, backends/) leak onto the consumer's include path"
#endif

#define PKV_STR2(x) #x
#define PKV_STR(x) PKV_STR2(x)

int main() {
    const char* macro_version = PKV_STR(PATTERNKV_VERSION_MAJOR) "." PKV_STR(PATTERNKV_VERSION_MINOR) "." PKV_STR(PATTERNKV_VERSION_PATCH);
    if (std::strcmp(macro_version, PKV_EXPECTED_VERSION) != 0) {
        std::fprintf(stderr, "version macros say %s, expected %s\n", macro_version, PKV_EXPECTED_VERSION);
        return 1;
    }
    try {
        const int H = 2, Hq = 4, d = 32, T = 40;
        patternkv::config cfg = patternkv::patternkv_config(2);
        cfg.head_dim = d;
        cfg.num_kv_heads = H;
        cfg.num_q_heads = Hq;
        cfg.residual_length = cfg.k_group = 16;
        cfg.num_patterns = 4;
        patternkv::layer_cache cache(cfg, /*batch=*/1, /*max_tokens=*/128);
        std::vector<float> k(T * H * d), v(T * H * d), q(Hq * d), out(Hq * d);
        for (std::size_t i = 0; i < k.size(); ++i) {
            k[i] = std::sin(0.37f * static_cast<float>(i));
            v[i] = std::cos(0.11f * static_cast<float>(i));
        }
        for (std::size_t i = 0; i < q.size(); ++i) q[i] = std::sin(0.05f * static_cast<float>(i));
        cache.prefill(0, patternkv::view_f32(k.data(), T, H, d), patternkv::view_f32(v.data(), T, H, d));
        cache.append(patternkv::view_f32(k.data(), 1, H, d), patternkv::view_f32(v.data(), 1, H, d));
        cache.attend(patternkv::view_f32(q.data(), 1, Hq, d), patternkv::view_f32(out.data(), 1, Hq, d));
        for (const float x : out)
            if (!std::isfinite(x)) {
                std::fprintf(stderr, "non-finite attention output\n");
                return 1;
            }
        // the library's own validation reaches the consumer as patternkv::error
        try {
            cache.prefill(0, patternkv::view_f32(k.data(), T, H, d), patternkv::view_f32(v.data(), T, H, d));
            std::fprintf(stderr, "prefill of a non-empty sequence was accepted\n");
            return 1;
        } catch (const patternkv::error&) {}
        std::printf("patternkv %s: %lld tokens, out[0] = %.6f, %.3f bits/element\n", macro_version, static_cast<long long>(cache.size(0)),
                    static_cast<double>(out[0]), cache.memory().bits_per_element());
    } catch (const std::exception& e) {
        std::fprintf(stderr, "error: %s\n", e.what());
        return 1;
    }
    return 0;
}

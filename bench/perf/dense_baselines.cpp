#include "dense_baselines.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>

#include <tbb/parallel_for.h>
#include <tbb/partitioner.h>
#include <tbb/task_arena.h>

#include "core/fp16.hpp"
#include "core/hash.hpp"
#include "reference/simd/cpu_features.hpp"
#include "reference/simd/exp_avx2.hpp"

namespace pkv_bench {
namespace {

constexpr int split_tokens = 1024;

#if defined(__x86_64__)
PKV_AVX2 inline float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

PKV_AVX2 float exp_sum_avx2(float* s, int n, float m) {
    const __m256 vm = _mm256_set1_ps(m);
    __m256 acc = _mm256_setzero_ps();
    int t = 0;
    for (; t + 8 <= n; t += 8) {
        const __m256 e = patternkv::simd::exp_fixed_avx2(_mm256_sub_ps(_mm256_loadu_ps(s + t), vm));
        _mm256_storeu_ps(s + t, e);
        acc = _mm256_add_ps(acc, e);
    }
    float L = hsum(acc);
    for (; t < n; ++t) L += s[t] = std::exp(s[t] - m);
    return L;
}
#endif

// s[t] = exp(s[t] - m) in place; returns the sum.
float exp_sum(float* s, int n, float m, [[maybe_unused]] bool simd) {
#if defined(__x86_64__)
    if (simd) return exp_sum_avx2(s, n, m);
#endif
    float L = 0.0f;
    for (int t = 0; t < n; ++t) L += s[t] = std::exp(s[t] - m);
    return L;
}

// Scores and softmax partials of one (sequence, KV head, split) for its G query heads, then the
// V accumulation: K and V rows are read once for the whole group. Generic C++ path.
template <class RowK, class RowV>
void split_generic(const RowK& row_k, const RowV& row_v, std::int64_t t0, std::int64_t n, int d, int G, const float* q, float* scores,
                   float* m, float* l, float* o) {
    std::vector<float> kr(d);
    for (std::int64_t t = 0; t < n; ++t) {
        row_k(t0 + t, kr.data());
        for (int g = 0; g < G; ++g) {
            float acc = 0.0f;
            for (int j = 0; j < d; ++j) acc += q[g * d + j] * kr[j];
            scores[g * n + t] = acc;
        }
    }
    for (int g = 0; g < G; ++g) {
        m[g] = *std::max_element(scores + g * n, scores + (g + 1) * n);
        l[g] = exp_sum(scores + g * n, static_cast<int>(n), m[g], false);
        std::fill(o + g * d, o + (g + 1) * d, 0.0f);
    }
    for (std::int64_t t = 0; t < n; ++t) {
        row_v(t0 + t, kr.data());
        for (int g = 0; g < G; ++g)
            for (int j = 0; j < d; ++j) o[g * d + j] += scores[g * n + t] * kr[j];
    }
}

#if defined(__x86_64__)
PKV_AVX2 inline __m256 load8(const float* p) { return _mm256_loadu_ps(p); }
PKV_AVX2 inline __m256 load8(const std::uint16_t* p) { return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))); }

// Sum of each of 8 vectors, as one vector (hadd tree): out lane i = sum of v[i].
PKV_AVX2 inline __m256 hsum8(const __m256 (&v)[8]) {
    const __m256 a = _mm256_hadd_ps(_mm256_hadd_ps(v[0], v[1]), _mm256_hadd_ps(v[2], v[3]));
    const __m256 b = _mm256_hadd_ps(_mm256_hadd_ps(v[4], v[5]), _mm256_hadd_ps(v[6], v[7]));
    // a = [v0 v1 v2 v3 | v0 v1 v2 v3] partial halves (low 128 / high 128), same for b
    return _mm256_add_ps(_mm256_permute2f128_ps(a, b, 0x20), _mm256_permute2f128_ps(a, b, 0x31));
}

// Scores of two keys for four query heads: 8 independent FMA chains (enough to fill both FMA
// pipes), reduced with one hadd tree. q is [4][d]; scores [4][n].
template <class T>
PKV_AVX2 void scores_2x4(const T* k0, const T* k1, int d, const float* q, float* s0, float* s1, std::int64_t n) {
    __m256 acc[8];
    for (auto& a : acc) a = _mm256_setzero_ps();
    for (int j = 0; j < d; j += 8) {
        const __m256 x0 = load8(k0 + j), x1 = load8(k1 + j);
        for (int g = 0; g < 4; ++g) {
            const __m256 qv = _mm256_loadu_ps(q + g * d + j);
            acc[g] = _mm256_fmadd_ps(qv, x0, acc[g]);
            acc[4 + g] = _mm256_fmadd_ps(qv, x1, acc[4 + g]);
        }
    }
    alignas(32) float r[8];
    _mm256_store_ps(r, hsum8(acc));
    for (int g = 0; g < 4; ++g) {
        s0[g * n] = r[g];
        s1[g * n] = r[4 + g];
    }
}

// AVX2 path for head_dim % 16 == 0 and G == 4 (the benchmark's shape; other shapes take the generic
// path): row pointers K/V [tokens][d] of one (seq, head). K: two keys x four heads per pass. V: 16
// channels x four heads of accumulators (8 registers) per pass over the split's rows.
template <class T>
PKV_AVX2 void split_avx2(const T* k, const T* v, std::int64_t t0, std::int64_t n, int d, const float* q, float* scores, float* m, float* l,
                         float* o) {
    const int G = 4;
    std::int64_t t = 0;
    for (; t + 2 <= n; t += 2) scores_2x4(k + (t0 + t) * d, k + (t0 + t + 1) * d, d, q, scores + t, scores + t + 1, n);
    if (t < n) scores_2x4(k + (t0 + t) * d, k + (t0 + t) * d, d, q, scores + t, scores + t, n);
    for (int g = 0; g < G; ++g) {
        float* s = scores + g * n;
        m[g] = *std::max_element(s, s + n);
        l[g] = exp_sum_avx2(s, static_cast<int>(n), m[g]);
    }
    for (int j0 = 0; j0 < d; j0 += 16) {
        __m256 acc[4][2];
        for (auto& a : acc) a[0] = a[1] = _mm256_setzero_ps();
        for (std::int64_t i = 0; i < n; ++i) {
            const T* vr = v + (t0 + i) * d + j0;
            const __m256 v0 = load8(vr), v1 = load8(vr + 8);
            for (int g = 0; g < G; ++g) {
                const __m256 p = _mm256_broadcast_ss(scores + g * n + i);
                acc[g][0] = _mm256_fmadd_ps(p, v0, acc[g][0]);
                acc[g][1] = _mm256_fmadd_ps(p, v1, acc[g][1]);
            }
        }
        for (int g = 0; g < G; ++g) {
            _mm256_storeu_ps(o + g * d + j0, acc[g][0]);
            _mm256_storeu_ps(o + g * d + j0 + 8, acc[g][1]);
        }
    }
}
#endif

}  // namespace

std::uint64_t dense_cache::bytes() const { return half ? 2ull * (k16.size() + v16.size()) : 4ull * (k32.size() + v32.size()); }

dense_cache make_dense_cache(const dense_shape& s, bool half, std::uint64_t seed) {
    dense_cache c{s, half, {}, {}, {}, {}};
    const std::size_t n = static_cast<std::size_t>(s.batch) * s.kv_heads * s.tokens * s.head_dim;
    const auto value = [seed](std::size_t i, std::uint64_t which) {
        return static_cast<float>(patternkv::core::counter_hash(seed, which, i, 0) >> 40) * (4.0f / 16777216.0f) - 2.0f;
    };
    if (half) {
        c.k16.resize(n);
        c.v16.resize(n);
        tbb::parallel_for(std::size_t{0}, n, [&](std::size_t i) {
            c.k16[i] = patternkv::core::float_to_half(value(i, 1));
            c.v16[i] = patternkv::core::float_to_half(value(i, 2));
        });
    } else {
        c.k32.resize(n);
        c.v32.resize(n);
        tbb::parallel_for(std::size_t{0}, n, [&](std::size_t i) {
            c.k32[i] = value(i, 1);
            c.v32[i] = value(i, 2);
        });
    }
    return c;
}

void dense_decode_attention(const dense_cache& c, const float* q, float* out) {
    const dense_shape& s = c.shape;
    const int d = s.head_dim, G = s.q_heads / s.kv_heads;
    const std::int64_t splits = (s.tokens + split_tokens - 1) / split_tokens;
    const float tau = 1.0f / std::sqrt(static_cast<float>(d));
    std::vector<float> qs(static_cast<std::size_t>(s.batch) * s.q_heads * d);
    for (std::size_t i = 0; i < qs.size(); ++i) qs[i] = q[i] * tau;
    // partials [batch][q_heads][splits] x (m, l, o[d])
    const std::size_t rec = 2 + static_cast<std::size_t>(d);
    std::vector<float> part(static_cast<std::size_t>(s.batch) * s.q_heads * splits * rec);
    tbb::parallel_for(std::int64_t{0}, s.batch * s.kv_heads * splits, [&](std::int64_t task) {
        const std::int64_t b = task / (s.kv_heads * splits), h = task / splits % s.kv_heads, sp = task % splits;
        const std::int64_t t0 = sp * split_tokens, n = std::min<std::int64_t>(split_tokens, s.tokens - t0);
        const std::size_t base = (static_cast<std::size_t>(b) * s.kv_heads + h) * s.tokens * d;
        thread_local std::vector<float> scores;
        scores.resize(static_cast<std::size_t>(G) * split_tokens);
        float m[64], l[64];
        std::vector<float> o(static_cast<std::size_t>(G) * d);
        const float* qg = qs.data() + (static_cast<std::size_t>(b) * s.q_heads + h * G) * d;
#if defined(__x86_64__)
        if (patternkv::simd::have_avx2() && d % 16 == 0 && G == 4) {
            if (c.half)
                split_avx2(c.k16.data() + base, c.v16.data() + base, t0, n, d, qg, scores.data(), m, l, o.data());
            else
                split_avx2(c.k32.data() + base, c.v32.data() + base, t0, n, d, qg, scores.data(), m, l, o.data());
        } else
#endif
        {
            const auto rk = [&](std::int64_t t, float* r) {
                for (int j = 0; j < d; ++j)
                    r[j] = c.half ? patternkv::core::half_to_float(c.k16[base + t * d + j]) : c.k32[base + t * d + j];
            };
            const auto rv = [&](std::int64_t t, float* r) {
                for (int j = 0; j < d; ++j)
                    r[j] = c.half ? patternkv::core::half_to_float(c.v16[base + t * d + j]) : c.v32[base + t * d + j];
            };
            split_generic(rk, rv, t0, n, d, G, qg, scores.data(), m, l, o.data());
        }
        for (int g = 0; g < G; ++g) {
            float* r = part.data() + ((static_cast<std::size_t>(b) * s.q_heads + h * G + g) * splits + sp) * rec;
            r[0] = m[g];
            r[1] = l[g];
            std::copy(o.begin() + g * d, o.begin() + (g + 1) * d, r + 2);
        }
    });
    tbb::parallel_for(0, s.batch * s.q_heads, [&](int bh) {
        const float* r = part.data() + static_cast<std::size_t>(bh) * splits * rec;
        float big_m = r[0];
        for (std::int64_t sp = 1; sp < splits; ++sp) big_m = std::max(big_m, r[sp * rec]);
        float L = 0.0f;
        float* o = out + static_cast<std::size_t>(bh) * d;
        std::fill(o, o + d, 0.0f);
        for (std::int64_t sp = 0; sp < splits; ++sp) {
            const float a = std::exp(r[sp * rec] - big_m);
            L += a * r[sp * rec + 1];
            for (int j = 0; j < d; ++j) o[j] += a * r[sp * rec + 2 + j];
        }
        for (int j = 0; j < d; ++j) o[j] /= L;
    });
}

#if defined(__x86_64__)
// Scores of up to 8 queries (rows of q, already scaled) against keys [0, keys) of one head, with K
// transposed [d][tokens]: 8 keys x 8 queries of accumulators in registers.
PKV_AVX2 void score_tile_avx2(const float* const* qrows, int nq, const float* kt, int tokens, int d, int keys, float* s, int s_stride) {
    for (int t0 = 0; t0 < keys; t0 += 8) {
        __m256 acc[8];
        for (int i = 0; i < 8; ++i) acc[i] = _mm256_setzero_ps();
        for (int j = 0; j < d; ++j) {
            const __m256 kv = _mm256_loadu_ps(kt + static_cast<std::size_t>(j) * tokens + t0);
            for (int i = 0; i < 8; ++i)
                if (i < nq) acc[i] = _mm256_fmadd_ps(_mm256_broadcast_ss(qrows[i] + j), kv, acc[i]);
        }
        for (int i = 0; i < nq; ++i) _mm256_storeu_ps(s + static_cast<std::size_t>(i) * s_stride + t0, acc[i]);
    }
}

// o_i = sum_t p_it v_t for up to 4 rows at a time, 16 channels x 4 rows of accumulators.
PKV_AVX2 void weighted_rows_avx2(const float* p, int p_stride, int nq, const float* v, std::size_t v_stride, int keys, int d,
                                 float* const* o) {
    for (int i0 = 0; i0 < nq; i0 += 4) {
        const int ni = std::min(4, nq - i0);
        for (int j = 0; j < d; j += 16) {
            __m256 acc[4][2];
            for (int i = 0; i < 4; ++i) acc[i][0] = acc[i][1] = _mm256_setzero_ps();
            for (int t = 0; t < keys; ++t) {
                const float* vr = v + t * v_stride + j;
                const __m256 v0 = _mm256_loadu_ps(vr), v1 = _mm256_loadu_ps(vr + 8);
                for (int i = 0; i < 4; ++i) {
                    if (i >= ni) break;
                    const __m256 w = _mm256_broadcast_ss(p + static_cast<std::size_t>(i0 + i) * p_stride + t);
                    acc[i][0] = _mm256_fmadd_ps(w, v0, acc[i][0]);
                    acc[i][1] = _mm256_fmadd_ps(w, v1, acc[i][1]);
                }
            }
            for (int i = 0; i < ni; ++i) {
                _mm256_storeu_ps(o[i0 + i] + j, acc[i][0]);
                _mm256_storeu_ps(o[i0 + i] + j + 8, acc[i][1]);
            }
        }
    }
}
#endif

void dense_prefill_attention(int tokens, int q_heads, int kv_heads, int d, const float* q, const float* k, const float* v, float* out) {
    const int G = q_heads / kv_heads;
    const float tau = 1.0f / std::sqrt(static_cast<float>(d));
    const std::size_t kv_stride = static_cast<std::size_t>(kv_heads) * d;
#if defined(__x86_64__)
    const bool simd = patternkv::simd::have_avx2() && d % 16 == 0;
#else
    const bool simd = false;
#endif
    // K transposed per KV head, [h][j][t] (padded to a multiple of 8 tokens), so score tiles load
    // 8 consecutive keys of one channel.
    const int padded = (tokens + 7) / 8 * 8;
    std::vector<float> kt(static_cast<std::size_t>(kv_heads) * d * padded, 0.0f);
    tbb::parallel_for(0, kv_heads * d, [&](int hj) {
        const int h = hj / d, j = hj % d;
        for (int t = 0; t < tokens; ++t) kt[static_cast<std::size_t>(hj) * padded + t] = k[t * kv_stride + h * d + j];
    });
    // one task per (query head, block of 8 queries)
    const int block = 8, blocks = (tokens + block - 1) / block;
    tbb::parallel_for(0, q_heads * blocks, [&](int task) {
        const int hq = task / blocks, b0 = task % blocks * block, h = hq / G;
        const int nq = std::min(block, tokens - b0), keys = b0 + nq;
        thread_local std::vector<float> s, qs;
        s.resize(static_cast<std::size_t>(block) * padded);
        qs.resize(static_cast<std::size_t>(block) * d);
        const float* qrows[block];
        float* orows[block];
        for (int i = 0; i < nq; ++i) {
            const float* qr = q + (static_cast<std::size_t>(b0 + i) * q_heads + hq) * d;
            for (int j = 0; j < d; ++j) qs[static_cast<std::size_t>(i) * d + j] = qr[j] * tau;
            qrows[i] = qs.data() + static_cast<std::size_t>(i) * d;
            orows[i] = out + (static_cast<std::size_t>(b0 + i) * q_heads + hq) * d;
        }
        const float* kth = kt.data() + static_cast<std::size_t>(h) * d * padded;
#if defined(__x86_64__)
        if (simd)
            score_tile_avx2(qrows, nq, kth, padded, d, keys, s.data(), padded);
        else
#endif
            for (int i = 0; i < nq; ++i)
                for (int t = 0; t < keys; ++t) {
                    float acc = 0.0f;
                    for (int j = 0; j < d; ++j) acc += qrows[i][j] * kth[static_cast<std::size_t>(j) * padded + t];
                    s[static_cast<std::size_t>(i) * padded + t] = acc;
                }
        for (int i = 0; i < nq; ++i) {  // causal softmax of row i over keys [0, b0 + i]
            float* row = s.data() + static_cast<std::size_t>(i) * padded;
            const int n = b0 + i + 1;
            const float mx = *std::max_element(row, row + n);
            const float inv = 1.0f / exp_sum(row, n, mx, simd);
            for (int t = 0; t < n; ++t) row[t] *= inv;
            std::fill(row + n, row + keys, 0.0f);
        }
#if defined(__x86_64__)
        if (simd) return weighted_rows_avx2(s.data(), padded, nq, v + h * d, kv_stride, keys, d, orows);
#endif
        for (int i = 0; i < nq; ++i) {
            std::fill(orows[i], orows[i] + d, 0.0f);
            for (int t = 0; t < keys; ++t)
                for (int j = 0; j < d; ++j) orows[i][j] += s[static_cast<std::size_t>(i) * padded + t] * v[t * kv_stride + h * d + j];
        }
    });
}

#if defined(__x86_64__)
// 16 independent 8-wide FMA chains: enough in flight to saturate the FMA pipes (latency x pipes).
PKV_AVX2 double fma_chains(std::int64_t iters) {
    __m256 acc[16];
    for (int i = 0; i < 16; ++i) acc[i] = _mm256_set1_ps(static_cast<float>(i) * 1e-3f);
    const __m256 a = _mm256_set1_ps(0.999999f), b = _mm256_set1_ps(1e-7f);
    for (std::int64_t it = 0; it < iters; ++it)
        for (auto& x : acc) x = _mm256_fmadd_ps(x, a, b);
    __m256 s = acc[0];
    for (int i = 1; i < 16; ++i) s = _mm256_add_ps(s, acc[i]);
    return hsum(s);
}
#endif

double fma_peak() {
#if defined(__x86_64__)
    if (!patternkv::simd::have_avx2()) return 0.0;
    const int threads = tbb::this_task_arena::max_concurrency();
    const std::int64_t iters = 20'000'000;
    double best = 0.0;
    for (int r = 0; r < 3; ++r) {
        std::vector<double> sink(static_cast<std::size_t>(threads));
        const auto t0 = std::chrono::steady_clock::now();
        tbb::parallel_for(
            0, threads, [&](int i) { sink[static_cast<std::size_t>(i)] = fma_chains(iters); }, tbb::static_partitioner{});
        const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        volatile double keep = sink[0];
        (void)keep;
        best = std::max(best, static_cast<double>(threads) * static_cast<double>(iters) * 16.0 * 8.0 / dt);
    }
    return best;
#else
    return 0.0;
#endif
}

double dense_baseline_error(bool half) {
    const dense_shape s{2, 2, 8, 128, 1500};
    const dense_cache c = make_dense_cache(s, half, 3);
    std::vector<float> q(static_cast<std::size_t>(s.batch) * s.q_heads * s.head_dim), out(q.size());
    for (std::size_t i = 0; i < q.size(); ++i)
        q[i] = static_cast<float>(patternkv::core::counter_hash(5, 0, i, 0) >> 40) / 16777216.0f - 0.5f;
    dense_decode_attention(c, q.data(), out.data());
    const int d = s.head_dim, G = s.q_heads / s.kv_heads;
    double worst = 0.0;
    for (int b = 0; b < s.batch; ++b)
        for (int hq = 0; hq < s.q_heads; ++hq) {
            const std::size_t base = (static_cast<std::size_t>(b) * s.kv_heads + hq / G) * s.tokens * d;
            const auto at = [&](const std::vector<float>& f, const std::vector<std::uint16_t>& h, std::size_t i) {
                return half ? static_cast<double>(patternkv::core::half_to_float(h[i])) : static_cast<double>(f[i]);
            };
            std::vector<double> w(static_cast<std::size_t>(s.tokens));
            double mx = -1e300, sum = 0.0;
            const float* qr = q.data() + (static_cast<std::size_t>(b) * s.q_heads + hq) * d;
            for (std::int64_t t = 0; t < s.tokens; ++t) {
                double dot = 0.0;
                for (int j = 0; j < d; ++j) dot += qr[j] * at(c.k32, c.k16, base + t * d + j);
                w[static_cast<std::size_t>(t)] = dot / std::sqrt(static_cast<double>(d));
                mx = std::max(mx, w[static_cast<std::size_t>(t)]);
            }
            for (double& x : w) sum += x = std::exp(x - mx);
            for (int j = 0; j < d; ++j) {
                double o = 0.0;
                for (std::int64_t t = 0; t < s.tokens; ++t) o += w[static_cast<std::size_t>(t)] * at(c.v32, c.v16, base + t * d + j);
                o /= sum;
                const double got = out[(static_cast<std::size_t>(b) * s.q_heads + hq) * d + j];
                worst = std::max(worst, std::fabs(got - o) / (std::fabs(o) + 1e-3));
            }
        }
    return worst;
}

double stream_read_bandwidth(std::size_t bytes, int reps) {
    const std::size_t n = bytes / sizeof(float);
    std::vector<float> a(n);
    tbb::parallel_for(std::size_t{0}, n, [&](std::size_t i) { a[i] = static_cast<float>(i & 1023); });
    double best = 0.0;
    for (int r = 0; r < reps; ++r) {
        const std::size_t chunks = 64, per = n / chunks;
        std::vector<double> sums(chunks);
        const auto t0 = std::chrono::steady_clock::now();
        tbb::parallel_for(std::size_t{0}, chunks, [&](std::size_t c) {
            float acc[16] = {};
            const float* p = a.data() + c * per;
            for (std::size_t i = 0; i + 16 <= per; i += 16)
                for (int l = 0; l < 16; ++l) acc[l] += p[i + l];
            double s = 0;
            for (float x : acc) s += x;
            sums[c] = s;
        });
        const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        volatile double sink = sums[0];
        (void)sink;
        best = std::max(best, static_cast<double>(per * chunks * sizeof(float)) / dt);
    }
    return best;
}

}  // namespace pkv_bench

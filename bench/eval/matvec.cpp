/// @file matvec.cpp
/// The project builds with -ffp-contract=off and no fast-math, so the compiler would not vectorize a
/// float reduction by itself; GCC vector extensions make the 8-wide accumulation explicit, and
/// target_clones picks AVX2 at run time where the CPU has it.

#include "matvec.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>

#include <tbb/blocked_range2d.h>
#include <tbb/parallel_for.h>

namespace pkveval {
namespace {

typedef float v8f __attribute__((vector_size(32)));

inline v8f load8(const float* p) {
    v8f v;
    std::memcpy(&v, p, sizeof v);
    return v;
}

/// The fold dot() ends with: 4 accumulators, then 8 lanes, then the scalar tail.
inline float finish(v8f s0, v8f s1, v8f s2, v8f s3, const float* a, const float* b, int i, int n) {
    const v8f s = (s0 + s1) + (s2 + s3);
    float r = ((s[0] + s[4]) + (s[1] + s[5])) + ((s[2] + s[6]) + (s[3] + s[7]));
    for (; i < n; ++i) r += a[i] * b[i];
    return r;
}

}  // namespace

__attribute__((target_clones("avx2", "default"))) float dot(const float* a, const float* b, int n) {
    v8f s0 = {}, s1 = {}, s2 = {}, s3 = {};
    int i = 0;
    for (; i + 32 <= n; i += 32) {
        s0 += load8(a + i) * load8(b + i);
        s1 += load8(a + i + 8) * load8(b + i + 8);
        s2 += load8(a + i + 16) * load8(b + i + 16);
        s3 += load8(a + i + 24) * load8(b + i + 24);
    }
    for (; i + 8 <= n; i += 8) s0 += load8(a + i) * load8(b + i);
    return finish(s0, s1, s2, s3, a, b, i, n);
}

namespace {

/// dot(w, x[v]) for three vectors at once, each with exactly dot()'s operations in dot()'s order
/// (so the same bits): a weight chunk is loaded once for three products, which matters because
/// the loads, not the arithmetic, bound dot().
__attribute__((target_clones("avx2", "default"))) void dot3(const float* w, const float* x0, const float* x1, const float* x2, int n,
                                                            float* out, int out_stride) {
    v8f a0 = {}, a1 = {}, a2 = {}, a3 = {}, b0 = {}, b1 = {}, b2 = {}, b3 = {}, c0 = {}, c1 = {}, c2 = {}, c3 = {};
    int i = 0;
    for (; i + 32 <= n; i += 32) {
        v8f wc = load8(w + i);
        a0 += wc * load8(x0 + i), b0 += wc * load8(x1 + i), c0 += wc * load8(x2 + i);
        wc = load8(w + i + 8);
        a1 += wc * load8(x0 + i + 8), b1 += wc * load8(x1 + i + 8), c1 += wc * load8(x2 + i + 8);
        wc = load8(w + i + 16);
        a2 += wc * load8(x0 + i + 16), b2 += wc * load8(x1 + i + 16), c2 += wc * load8(x2 + i + 16);
        wc = load8(w + i + 24);
        a3 += wc * load8(x0 + i + 24), b3 += wc * load8(x1 + i + 24), c3 += wc * load8(x2 + i + 24);
    }
    for (; i + 8 <= n; i += 8) {
        const v8f wc = load8(w + i);
        a0 += wc * load8(x0 + i), b0 += wc * load8(x1 + i), c0 += wc * load8(x2 + i);
    }
    out[0] = finish(a0, a1, a2, a3, w, x0, i, n);
    out[out_stride] = finish(b0, b1, b2, b3, w, x1, i, n);
    out[2 * out_stride] = finish(c0, c1, c2, c3, w, x2, i, n);
}

}  // namespace

void matmul(const float* w, int rows, int cols, const float* x, int batch, float* y) {
    // Tiles of rows x vectors: a tile's weight rows stay in L1/L2 while all its vectors use them.
    constexpr int row_tile = 16, vec_tile = 64;
    tbb::parallel_for(tbb::blocked_range2d<int>(0, rows, row_tile, 0, batch, vec_tile), [&](const tbb::blocked_range2d<int>& r) {
        for (int o = r.rows().begin(); o < r.rows().end(); ++o) {
            const float* wr = w + static_cast<std::size_t>(o) * cols;
            int b = r.cols().begin();
            for (; b + 3 <= r.cols().end(); b += 3) {
                const float* xb = x + static_cast<std::size_t>(b) * cols;
                dot3(wr, xb, xb + cols, xb + 2 * static_cast<std::size_t>(cols), cols, y + static_cast<std::size_t>(b) * rows + o, rows);
            }
            for (; b < r.cols().end(); ++b)
                y[static_cast<std::size_t>(b) * rows + o] = dot(wr, x + static_cast<std::size_t>(b) * cols, cols);
        }
    });
}

void attend_exact(const float* q, const float* k, const float* v, int first, int n, int stride, int head_dim, float scale, float* scratch,
                  float* out) {
    k += static_cast<std::size_t>(first) * stride;
    v += static_cast<std::size_t>(first) * stride;
    n -= first;
    float mx = -INFINITY;
    for (int j = 0; j < n; ++j) {
        scratch[j] = dot(q, k + static_cast<std::size_t>(j) * stride, head_dim) * scale;
        mx = std::max(mx, scratch[j]);
    }
    double sum = 0.0;
    for (int j = 0; j < n; ++j) {
        scratch[j] = std::exp(scratch[j] - mx);
        sum += scratch[j];
    }
    const float inv = static_cast<float>(1.0 / sum);
    std::fill(out, out + head_dim, 0.0f);
    for (int j = 0; j < n; ++j) {
        const float p = scratch[j] * inv;
        const float* vj = v + static_cast<std::size_t>(j) * stride;
        for (int d = 0; d < head_dim; ++d) out[d] += p * vj[d];
    }
}

}  // namespace pkveval

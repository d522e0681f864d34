#pragma once
/// @file matvec.hpp
/// The few fp32 kernels of the runner: dot products, matrix times B vectors, exact attention.

namespace pkveval {

/// sum_i a[i] * b[i] (8-wide vector accumulators; order fixed for a given n).
float dot(const float* a, const float* b, int n);

/// y[b][o] = sum_i w[o][i] * x[b][i] for b < batch, o < rows; w [rows][cols], x [batch][cols],
/// y [batch][rows]. Every weight row is read once per call and used for all `batch` vectors.
void matmul(const float* w, int rows, int cols, const float* x, int batch, float* y);

/// One head's softmax(q.k_j * scale) . v_j over tokens first <= j < n (a sliding window starts past
/// 0). k and v point at token 0 of the head, consecutive tokens `stride` floats apart; `scratch`
/// holds n - first floats. out [head_dim].
void attend_exact(const float* q, const float* k, const float* v, int first, int n, int stride, int head_dim, float scale, float* scratch,
                  float* out);

}  // namespace pkveval

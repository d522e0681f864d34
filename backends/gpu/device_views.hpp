#pragma once
// The caller's tensors as the kernels read and write them (layer_cache's device-resident calls),
// and the record of invalid elements they held. A host call's converted buffers are read through
// the same views, so both kinds of call run the same kernels.
#include <cstdint>

#include <patternkv/tensor_view.hpp>

#include "core/fp16.hpp"
#include "core/input_element.hpp"
#include "core/platform.hpp"
#include "atomics.hpp"
#include "runtime.hpp"

namespace patternkv::PKV_GPU_NS {

/// The device-view tensors whose invalid elements are recorded, one fault slot each.
enum input_tensor : int { prefill_k, prefill_v, append_k, append_v, attend_q, input_tensors };
inline constexpr const char* input_tensor_names[input_tensors] = {"prefill k", "prefill v", "append k", "append v", "attend q"};

/// A fault slot's content: the smallest (sequence, head, channel) key of an invalid element since
/// the slot was cleared, or no_fault.
inline constexpr unsigned long long no_fault = ~0ull;
PKV_HD unsigned long long fault_key(int seq, int head, int channel) {
    return (static_cast<unsigned long long>(seq) << 40) | (static_cast<unsigned long long>(head) << 20) | static_cast<unsigned>(channel);
}

/// A rank-3 tensor [a][b][c] of any dtype and strides, read element by element.
struct input_view {
    const void* data;
    dtype type;
    std::int64_t s0, s1, s2;

    static input_view of(const const_tensor_view& v) { return {v.data, v.type, v.strides[0], v.strides[1], v.strides[2]}; }
    /// Contiguous f32 [a][b][c].
    static input_view f32(const float* p, std::int64_t b, std::int64_t c) { return {p, dtype::f32, b * c, c, 1}; }

    /// Element (i, j, k); an invalid one (by `valid`) is recorded under (seq, j, k) and read as 0.
    template <bool (*valid)(float)>
    __device__ float checked(std::int64_t i, int j, int k, int seq, unsigned long long* fault) const {
        const float x = core::element_as_float(data, type, i * s0 + j * s1 + k * s2);
        if (valid(x)) return x;
        gpu::atomic_min(fault, fault_key(seq, j, k));
        return 0.0f;
    }
};

/// f32 rows of attention output [n][Hq][d], unit stride within a row.
struct output_rows {
    float* data;
    std::int64_t s0, s1;

    static output_rows of(const tensor_view& v) { return {static_cast<float*>(v.data), v.strides[0], v.strides[1]}; }
    static output_rows contiguous(float* p, std::int64_t rows, std::int64_t d) { return {p, rows * d, d}; }
    PKV_HD float* row(std::int64_t i, int h) const { return data + i * s0 + h * s1; }
};

/// K and V [n][H][d] views to fp16 rows out [2][H][n][d] (core::float_to_half, as the host's
/// conversion). Row i belongs to sequence seqs[i] (seqs null: every row to `seq`); invalid
/// elements go to faults[0] (K) and faults[1] (V) and are stored as 0.
__global__ void views_to_halves_kernel(input_view k, input_view v, int n, int H, int d, const int* seqs, int seq,
                                       unsigned long long* faults, std::uint16_t* out) {
    const std::int64_t idx = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (idx >= 2 * static_cast<std::int64_t>(H) * n * d) return;
    const int j = static_cast<int>(idx % d), i = static_cast<int>(idx / d % n), h = static_cast<int>(idx / d / n % H);
    const int kv = static_cast<int>(idx / d / n / H);
    const float x = (kv == 0 ? k : v).checked<core::valid_kv_value>(i, h, j, seqs != nullptr ? seqs[i] : seq, faults + kv);
    out[idx] = core::float_to_half(x);
}

}  // namespace patternkv::PKV_GPU_NS

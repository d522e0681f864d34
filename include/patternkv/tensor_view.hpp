#pragma once
/// @file tensor_view.hpp
/// Non-owning strided views over fp32, fp16 and bf16 tensors of rank up to 3.

#include <array>
#include <cstdint>
#include <string>
#include <type_traits>
#include "export.hpp"

namespace patternkv {

/// Element type of a tensor view. fp16 is IEEE binary16, bf16 is bfloat16, both as raw uint16_t bits.
enum class dtype : std::uint8_t { f32, f16, bf16 };

/// Name of a dtype ("f32", "f16", "bf16").
PATTERNKV_API const char* dtype_name(dtype t);

/// Where a view's elements are: in host memory, or in the memory of the device a GPU cache runs on
/// (layer_cache: device views are read and written by the cache's kernels on its stream).
enum class memory_space : std::uint8_t { host, device };

/// A rank-3 strided view. Strides are in elements. Unused leading dimensions have extent 1.
/// The library reads inputs through `const_tensor_view` and writes outputs through `tensor_view`.
template <class Ptr>
struct basic_tensor_view {
    Ptr data = nullptr;                            ///< first element
    dtype type = dtype::f32;                       ///< element type
    std::array<std::int64_t, 3> shape{0, 0, 0};    ///< extents
    std::array<std::int64_t, 3> strides{0, 0, 0};  ///< strides in elements
    memory_space space = memory_space::host;       ///< where `data` points

    /// A contiguous (row-major) view of shape {a, b, c}.
    static basic_tensor_view contiguous(Ptr p, dtype t, std::int64_t a, std::int64_t b, std::int64_t c) {
        return {p, t, {a, b, c}, {b * c, c, 1}};
    }
    /// A writable view converts to a read-only one.
    operator basic_tensor_view<const void*>() const requires std::is_same_v<Ptr, void*> { return {data, type, shape, strides, space}; }
    /// The same view of device memory (`data` is a device pointer of the cache's GPU).
    basic_tensor_view on_device() const {
        basic_tensor_view v = *this;
        v.space = memory_space::device;
        return v;
    }
    /// Offset in elements of element (i, j, k).
    std::int64_t offset(std::int64_t i, std::int64_t j, std::int64_t k) const { return i * strides[0] + j * strides[1] + k * strides[2]; }
};

/// Read-only view (inputs).
using const_tensor_view = basic_tensor_view<const void*>;
/// Writable view (outputs).
using tensor_view = basic_tensor_view<void*>;

/// Contiguous fp32 input view [a, b, c].
inline const_tensor_view view_f32(const float* p, std::int64_t a, std::int64_t b, std::int64_t c) {
    return const_tensor_view::contiguous(p, dtype::f32, a, b, c);
}
/// Contiguous fp32 output view [a, b, c].
inline tensor_view view_f32(float* p, std::int64_t a, std::int64_t b, std::int64_t c) {
    return tensor_view::contiguous(p, dtype::f32, a, b, c);
}
/// Contiguous fp16 input view [a, b, c] over raw binary16 bits.
inline const_tensor_view view_f16(const std::uint16_t* p, std::int64_t a, std::int64_t b, std::int64_t c) {
    return const_tensor_view::contiguous(p, dtype::f16, a, b, c);
}
/// Contiguous bf16 input view [a, b, c] over raw bfloat16 bits.
inline const_tensor_view view_bf16(const std::uint16_t* p, std::int64_t a, std::int64_t b, std::int64_t c) {
    return const_tensor_view::contiguous(p, dtype::bf16, a, b, c);
}

}  // namespace patternkv

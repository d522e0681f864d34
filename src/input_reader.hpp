#pragma once
// Validation and conversion of user tensors at the API boundary (internal).
#include <cstdint>
#include <vector>

#include <patternkv/tensor_view.hpp>

namespace patternkv::detail {

/// Throws unless `v` has the given shape, a non-null pointer (when non-empty) and a supported dtype.
void check_shape(const char* name, const const_tensor_view& v, std::int64_t a, std::int64_t b, std::int64_t c);
void check_shape(const char* name, const tensor_view& v, std::int64_t a, std::int64_t b, std::int64_t c);

/// Element (i, j, k) as a float (exact for every dtype).
float read_element(const const_tensor_view& v, std::int64_t i, std::int64_t j, std::int64_t k);

/// Converts a [a][b][c] view to fp16 bits laid out [b][a][c] (head-major), rounding to nearest even.
/// Throws naming the tensor and the first offending element for NaN/Inf or |x| > max_abs_input.
void to_cache_half(const char* name, const const_tensor_view& v, std::vector<std::uint16_t>& out);

/// Converts a [a][b][c] view to floats laid out [a][b][c]; throws for NaN/Inf.
void to_finite_floats(const char* name, const const_tensor_view& v, std::vector<float>& out);

}  // namespace patternkv::detail

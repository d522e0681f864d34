#pragma once
// Reading one element of a user's tensor and the values a cache accepts: the host's input checks
// (src/input_reader.cpp) and the GPU kernels that read device views use these same definitions.

#include <cstdint>

#include <patternkv/tensor_view.hpp>

#include "fp16.hpp"
#include "platform.hpp"

namespace patternkv::core {

/// Element `offset` (in elements) of `data`, of type `type`, as a float (exact for every dtype).
PKV_HD float element_as_float(const void* data, dtype type, std::int64_t offset) {
    switch (type) {
        case dtype::f16:
            return half_to_float(static_cast<const std::uint16_t*>(data)[offset]);
        case dtype::bf16:
            return bf16_to_float(static_cast<const std::uint16_t*>(data)[offset]);
        default:
            return static_cast<const float*>(data)[offset];
    }
}

/// A K or V value a cache stores: finite, with |x| <= max_abs_input (false for NaN and Inf).
PKV_HD bool valid_kv_value(float x) { return x <= max_abs_input && x >= -max_abs_input; }

/// A query value: finite.
PKV_HD bool valid_query_value(float x) { return x <= 3.40282347e+38f && x >= -3.40282347e+38f; }

}  // namespace patternkv::core

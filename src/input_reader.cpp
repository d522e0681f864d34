#include "input_reader.hpp"

#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>

#include <fmt/format.h>
#include <tbb/blocked_range.h>
#include <tbb/parallel_for.h>

#include <patternkv/error.hpp>

#include "core/fp16.hpp"
#include "core/input_element.hpp"
#include "core/platform.hpp"
#include "reference/simd/cpu_features.hpp"
#include "reference/simd/halves_avx2.hpp"

namespace patternkv::detail {
namespace {

template <class View>
void check_shape_impl(const char* name, const View& v, std::int64_t a, std::int64_t b, std::int64_t c) {
    if (v.shape[0] != a || v.shape[1] != b || v.shape[2] != c)
        throw error(fmt::format("{}: shape [{}, {}, {}] does not match the expected [{}, {}, {}]", name, v.shape[0], v.shape[1], v.shape[2],
                                a, b, c));
    if (v.type != dtype::f32 && v.type != dtype::f16 && v.type != dtype::bf16)
        throw error(fmt::format("{}: unsupported dtype code {}", name, static_cast<int>(v.type)));
    if (a * b * c > 0 && v.data == nullptr) throw error(fmt::format("{}: null data pointer", name));
}

}  // namespace

void check_shape(const char* name, const const_tensor_view& v, std::int64_t a, std::int64_t b, std::int64_t c) {
    check_shape_impl(name, v, a, b, c);
}
void check_shape(const char* name, const tensor_view& v, std::int64_t a, std::int64_t b, std::int64_t c) {
    check_shape_impl(name, v, a, b, c);
}

float read_element(const const_tensor_view& v, std::int64_t i, std::int64_t j, std::int64_t k) {
    return core::element_as_float(v.data, v.type, v.offset(i, j, k));
}

namespace {

[[noreturn]] void throw_bad_element(const char* name, std::int64_t i, std::int64_t j, std::int64_t k, float x) {
    throw error(fmt::format("{}[{}, {}, {}] = {}: values must be finite with |x| <= {}", name, i, j, k, x, core::max_abs_input));
}

// Row (i, j) of c elements to fp16; false if an element is invalid (out is then unspecified).
bool row_to_half(const const_tensor_view& v, std::int64_t i, std::int64_t j, std::int64_t c, std::uint16_t* out) {
    std::int64_t k = 0;
#if defined(__x86_64__)
    if (v.type == dtype::f32 && v.strides[2] == 1 && simd::have_avx2()) {
        k = simd::floats_to_halves_checked(static_cast<const float*>(v.data) + v.offset(i, j, 0), c, core::max_abs_input, out);
        if (k < 0) return false;
    }
#endif
    bool ok = true;
    for (; k < c; ++k) {
        const float x = read_element(v, i, j, k);
        ok &= core::valid_kv_value(x);
        out[k] = core::float_to_half(x);
    }
    return ok;
}

}  // namespace

void to_cache_half(const char* name, const const_tensor_view& v, std::vector<std::uint16_t>& out) {
    const std::int64_t a = v.shape[0], b = v.shape[1], c = v.shape[2];  // (lambdas below capture them)
    out.resize(static_cast<std::size_t>(a * b * c));
    // Rows convert in parallel (F16C where present: the same rounding as core::float_to_half);
    // an invalid element anywhere sends a sequential scan after the first one for the message.
    std::atomic<bool> bad{false};
    tbb::parallel_for(tbb::blocked_range<std::int64_t>(0, a * b, 256), [&](const tbb::blocked_range<std::int64_t>& r) {
        for (std::int64_t row = r.begin(); row < r.end(); ++row) {
            const std::int64_t j = row / a, i = row % a;
            if (!row_to_half(v, i, j, c, out.data() + static_cast<std::size_t>(row * c))) bad = true;
        }
    });
    if (!bad) return;
    for (std::int64_t j = 0; j < b; ++j)
        for (std::int64_t i = 0; i < a; ++i)
            for (std::int64_t k = 0; k < c; ++k)
                if (const float x = read_element(v, i, j, k); !core::valid_kv_value(x)) throw_bad_element(name, i, j, k, x);
}

void to_finite_floats(const char* name, const const_tensor_view& v, std::vector<float>& out) {
    const auto [a, b, c] = v.shape;
    out.resize(static_cast<std::size_t>(a * b * c));
    bool ok = true;  // fast path (contiguous f32 rows): copy, and check finiteness branch-free
    if (v.type == dtype::f32 && v.strides[2] == 1) {
        for (std::int64_t i = 0; i < a; ++i)
            for (std::int64_t j = 0; j < b; ++j) {
                const float* x = static_cast<const float*>(v.data) + v.offset(i, j, 0);
                float* y = out.data() + (i * b + j) * c;
                for (std::int64_t k = 0; k < c; ++k) {
                    ok &= std::fabs(x[k]) <= std::numeric_limits<float>::max();
                    y[k] = x[k];
                }
            }
        if (ok) return;
    }
    for (std::int64_t i = 0; i < a; ++i)
        for (std::int64_t j = 0; j < b; ++j)
            for (std::int64_t k = 0; k < c; ++k) {
                const float x = read_element(v, i, j, k);
                if (!core::valid_query_value(x)) throw error(fmt::format("{}[{}, {}, {}] = {}: values must be finite", name, i, j, k, x));
                out[static_cast<std::size_t>((i * b + j) * c + k)] = x;
            }
}

}  // namespace patternkv::detail

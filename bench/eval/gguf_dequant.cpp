/// @file gguf_dequant.cpp
/// ggml block formats to fp32 (layouts from ggml's block_q4_0 ... block_q8_0 definitions).

#include <bit>
#include <cstring>

#include <fmt/format.h>

#include "eval_error.hpp"
#include "gguf_reader.hpp"

namespace pkveval {
namespace {

std::uint16_t load_u16(const std::uint8_t* p) { return static_cast<std::uint16_t>(p[0] | (p[1] << 8)); }
float load_half(const std::uint8_t* p) { return half_to_float(load_u16(p)); }

// One function per block format: `b` points at one block, 32 values go to `y`.
void block_q4_0(const std::uint8_t* b, float* y) {  // {half d; u8 qs[16]}
    const float d = load_half(b);
    for (int j = 0; j < 16; ++j) {
        y[j] = static_cast<float>((b[2 + j] & 0x0F) - 8) * d;
        y[j + 16] = static_cast<float>((b[2 + j] >> 4) - 8) * d;
    }
}
void block_q4_1(const std::uint8_t* b, float* y) {  // {half d; half m; u8 qs[16]}
    const float d = load_half(b), m = load_half(b + 2);
    for (int j = 0; j < 16; ++j) {
        y[j] = static_cast<float>(b[4 + j] & 0x0F) * d + m;
        y[j + 16] = static_cast<float>(b[4 + j] >> 4) * d + m;
    }
}
std::uint32_t load_u32(const std::uint8_t* p) {
    std::uint32_t v;
    std::memcpy(&v, p, 4);
    return v;
}
void block_q5_0(const std::uint8_t* b, float* y) {  // {half d; u8 qh[4]; u8 qs[16]}
    const float d = load_half(b);
    const std::uint32_t qh = load_u32(b + 2);
    for (int j = 0; j < 16; ++j) {
        const int h0 = static_cast<int>((qh >> j) << 4) & 0x10;
        const int h1 = static_cast<int>(qh >> (j + 12)) & 0x10;
        y[j] = static_cast<float>(((b[6 + j] & 0x0F) | h0) - 16) * d;
        y[j + 16] = static_cast<float>(((b[6 + j] >> 4) | h1) - 16) * d;
    }
}
void block_q5_1(const std::uint8_t* b, float* y) {  // {half d; half m; u8 qh[4]; u8 qs[16]}
    const float d = load_half(b), m = load_half(b + 2);
    const std::uint32_t qh = load_u32(b + 4);
    for (int j = 0; j < 16; ++j) {
        const int h0 = static_cast<int>((qh >> j) << 4) & 0x10;
        const int h1 = static_cast<int>(qh >> (j + 12)) & 0x10;
        y[j] = static_cast<float>((b[8 + j] & 0x0F) | h0) * d + m;
        y[j + 16] = static_cast<float>((b[8 + j] >> 4) | h1) * d + m;
    }
}
void block_q8_0(const std::uint8_t* b, float* y) {  // {half d; i8 qs[32]}
    const float d = load_half(b);
    for (int j = 0; j < 32; ++j) y[j] = static_cast<float>(static_cast<std::int8_t>(b[2 + j])) * d;
}

} // namespace

float half_to_float(std::uint16_t h) {
    const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000) << 16;
    std::uint32_t exp = (h >> 10) & 0x1F, mant = h & 0x3FF, bits;
    if (exp == 0x1F) {
        bits = sign | 0x7F800000u | (mant << 13);
    } else if (exp != 0) {
        bits = sign | ((exp + 112) << 23) | (mant << 13);
    } else if (mant == 0) {
        bits = sign;
    } else {  // subnormal half: normalize
        int e = -1;
        do { ++e; mant <<= 1; } while ((mant & 0x400) == 0);
        bits = sign | (static_cast<std::uint32_t>(112 - e) << 23) | ((mant & 0x3FF) << 13);
    }
    return std::bit_cast<float>(bits);
}

void dequantize(std::uint32_t type, std::span<const std::uint8_t> src, std::uint64_t elements, float* dst) {
    const std::uint64_t need = ggml_type_bytes(type, elements);
    if (need == 0 || src.size() < need)
        throw eval_error(fmt::format("cannot dequantize {} values of type {}", elements, ggml_type_name(type)));
    const std::uint8_t* p = src.data();
    void (*block)(const std::uint8_t*, float*) = nullptr;
    std::uint64_t block_bytes = 0;
    switch (static_cast<ggml_type>(type)) {
    case ggml_type::f32: std::memcpy(dst, p, elements * 4); return;
    case ggml_type::f16:
        for (std::uint64_t i = 0; i < elements; ++i) dst[i] = half_to_float(load_u16(p + 2 * i));
        return;
    case ggml_type::bf16:
        for (std::uint64_t i = 0; i < elements; ++i) dst[i] = std::bit_cast<float>(static_cast<std::uint32_t>(load_u16(p + 2 * i)) << 16);
        return;
    case ggml_type::q4_0: block = block_q4_0; block_bytes = 18; break;
    case ggml_type::q4_1: block = block_q4_1; block_bytes = 20; break;
    case ggml_type::q5_0: block = block_q5_0; block_bytes = 22; break;
    case ggml_type::q5_1: block = block_q5_1; block_bytes = 24; break;
    case ggml_type::q8_0: block = block_q8_0; block_bytes = 34; break;
    default:
        throw eval_error(fmt::format("tensor type {} is not supported by this runner (supported: f32 f16 bf16 q4_0 q4_1 q5_0 q5_1 q8_0)",
                                     ggml_type_name(type)));
    }
    for (std::uint64_t i = 0; i < elements / 32; ++i) block(p + i * block_bytes, dst + i * 32);
}

} // namespace pkveval

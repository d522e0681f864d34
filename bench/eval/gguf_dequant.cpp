/// @file gguf_dequant.cpp
/// ggml block formats to fp32 (layouts from ggml's block_q4_0 ... block_q8_0 and block_q2_K ...
/// block_q6_K definitions). The K-quants use super-blocks of QK_K = 256 values split into 16 or 8
/// sub-blocks, each with its own (quantized) scale. Products are formed in ggml's order
/// (sub-block factor d * scale first, then times q, then minus dmin * min) so the results are
/// bit-identical to ggml's and gguf-py's; the build disables FMA contraction (-ffp-contract=off).

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

// ---- K-quants: `b` points at one super-block, 256 values go to `y` (value i is in sub-block i / 16
// or i / 32). All multi-byte fields are little-endian; "half" is IEEE fp16.

constexpr int qk_k = 256;

void block_q2_k(const std::uint8_t* b, float* y) {
    // {u8 scales[16]; u8 qs[64]; half d; half dmin}: 16 sub-blocks of 16; scales[s] holds the 4-bit
    // scale (low nibble) and 4-bit min (high nibble) of sub-block s. Value i = 128 * n + 32 * j + l
    // (n < 2, j < 4, l < 32) is the 2-bit field j of qs[32 * n + l]; y = d * sc * q - dmin * m.
    const std::uint8_t* scales = b;
    const std::uint8_t* qs = b + 16;
    const float d = load_half(b + 80), dmin = load_half(b + 82);
    for (int i = 0; i < qk_k; ++i) {
        const int n = i / 128, j = (i / 32) % 4, l = i % 32;
        const std::uint8_t sm = scales[i / 16];
        const float dl = d * static_cast<float>(sm & 0x0F), ml = dmin * static_cast<float>(sm >> 4);
        const int q = (qs[32 * n + l] >> (2 * j)) & 3;
        y[i] = dl * static_cast<float>(q) - ml;
    }
}

/// Signed 6-bit scale of Q3_K sub-block s (of 16), packed in 12 bytes: the low 4 bits are the low
/// (s < 8) or high (s >= 8) nibble of byte s % 8, the top 2 bits are the 2-bit field s / 4 of byte
/// 8 + s % 4; stored with an offset of 32.
int scale_q3_k(const std::uint8_t* sc, int s) {
    const int low = s < 8 ? sc[s] & 0x0F : sc[s - 8] >> 4;
    const int high = (sc[8 + s % 4] >> (2 * (s / 4))) & 3;
    return (low | (high << 4)) - 32;
}
void block_q3_k(const std::uint8_t* b, float* y) {
    // {u8 hmask[32]; u8 qs[64]; u8 scales[12]; half d}: 16 sub-blocks of 16. Value i = 128 * n +
    // 32 * j + l (n < 2, j < 4, l < 32): low 2 bits are field j of qs[32 * n + l], the high bit is
    // bit 4 * n + j of hmask[l]; q = low - (high bit clear ? 4 : 0), so q is in [-4, 3].
    // y = (d * scale) * q.
    const std::uint8_t* hmask = b;
    const std::uint8_t* qs = b + 32;
    const std::uint8_t* scales = b + 96;
    const float d = load_half(b + 108);
    for (int i = 0; i < qk_k; ++i) {
        const int n = i / 128, j = (i / 32) % 4, l = i % 32;
        const float dl = d * static_cast<float>(scale_q3_k(scales, i / 16));
        const int low = (qs[32 * n + l] >> (2 * j)) & 3;
        const bool high = ((hmask[l] >> (4 * n + j)) & 1) != 0;
        y[i] = dl * static_cast<float>(low - (high ? 0 : 4));
    }
}

/// 6-bit scale and min of Q4_K/Q5_K sub-block s (of 8), packed in 12 bytes:
///   bytes 0-3:  scale of s = 0..3 in bits 0-5, top 2 bits of the scale of s + 4 in bits 6-7
///   bytes 4-7:  min   of s = 0..3 in bits 0-5, top 2 bits of the min   of s + 4 in bits 6-7
///   bytes 8-11: low 4 bits of the scale (low nibble) and min (high nibble) of s = 4..7
void scale_min_k4(const std::uint8_t* sc, int s, int& scale, int& min) {
    if (s < 4) {
        scale = sc[s] & 0x3F;
        min = sc[s + 4] & 0x3F;
    } else {
        scale = (sc[s + 4] & 0x0F) | ((sc[s - 4] >> 6) << 4);
        min = (sc[s + 4] >> 4) | ((sc[s] >> 6) << 4);
    }
}
/// Q4_K and Q5_K share everything but Q5_K's fifth bit: 8 sub-blocks of 32, value 32 * s + l of
/// sub-block s is the low (s even) or high (s odd) nibble of qs[32 * (s / 2) + l], plus (Q5_K, qh
/// not null) bit s of qh[l] as its bit 4. y = (d * scale) * q - dmin * min.
void block_k4_k5(float d, float dmin, const std::uint8_t* scales, const std::uint8_t* qh, const std::uint8_t* qs, float* y) {
    for (int s = 0; s < 8; ++s) {
        int sc = 0, m = 0;
        scale_min_k4(scales, s, sc, m);
        const float d1 = d * static_cast<float>(sc), m1 = dmin * static_cast<float>(m);
        const std::uint8_t* q = qs + 32 * (s / 2);
        const int shift = 4 * (s % 2);
        for (int l = 0; l < 32; ++l) {
            const int v = ((q[l] >> shift) & 0x0F) | (qh == nullptr ? 0 : ((qh[l] >> s) & 1) << 4);
            y[32 * s + l] = d1 * static_cast<float>(v) - m1;
        }
    }
}
void block_q4_k(const std::uint8_t* b, float* y) {  // {half d; half dmin; u8 scales[12]; u8 qs[128]}
    block_k4_k5(load_half(b), load_half(b + 2), b + 4, nullptr, b + 16, y);
}
void block_q5_k(const std::uint8_t* b, float* y) {  // {half d; half dmin; u8 scales[12]; u8 qh[32]; u8 qs[128]}
    block_k4_k5(load_half(b), load_half(b + 2), b + 4, b + 16, b + 48, y);
}
void block_q6_k(const std::uint8_t* b, float* y) {
    // {u8 ql[128]; u8 qh[64]; i8 scales[16]; half d}: 16 sub-blocks of 16. Value i = 128 * n + 32 * k
    // + l (n < 2, k < 4, l < 32): low 4 bits are the low (k < 2) or high (k >= 2) nibble of
    // ql[64 * n + 32 * (k % 2) + l], top 2 bits are field k of qh[32 * n + l]; q = 6 bits - 32.
    // y = (d * scale) * q.
    const std::uint8_t* ql = b;
    const std::uint8_t* qh = b + 128;
    const std::uint8_t* scales = b + 192;
    const float d = load_half(b + 208);
    for (int i = 0; i < qk_k; ++i) {
        const int n = i / 128, k = (i / 32) % 4, l = i % 32;
        const int low = (ql[64 * n + 32 * (k % 2) + l] >> (4 * (k / 2))) & 0x0F;
        const int high = (qh[32 * n + l] >> (2 * k)) & 3;
        const float dl = d * static_cast<float>(static_cast<std::int8_t>(scales[i / 16]));
        y[i] = dl * static_cast<float>((low | (high << 4)) - 32);
    }
}

}  // namespace

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
        do {
            ++e;
            mant <<= 1;
        } while ((mant & 0x400) == 0);
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
    std::uint64_t block_values = 32;
    switch (static_cast<ggml_type>(type)) {
        case ggml_type::f32:
            std::memcpy(dst, p, elements * 4);
            return;
        case ggml_type::f16:
            for (std::uint64_t i = 0; i < elements; ++i) dst[i] = half_to_float(load_u16(p + 2 * i));
            return;
        case ggml_type::bf16:
            for (std::uint64_t i = 0; i < elements; ++i)
                dst[i] = std::bit_cast<float>(static_cast<std::uint32_t>(load_u16(p + 2 * i)) << 16);
            return;
        case ggml_type::q4_0:
            block = block_q4_0;
            break;
        case ggml_type::q4_1:
            block = block_q4_1;
            break;
        case ggml_type::q5_0:
            block = block_q5_0;
            break;
        case ggml_type::q5_1:
            block = block_q5_1;
            break;
        case ggml_type::q8_0:
            block = block_q8_0;
            break;
        case ggml_type::q2_k:
            block = block_q2_k;
            block_values = qk_k;
            break;
        case ggml_type::q3_k:
            block = block_q3_k;
            block_values = qk_k;
            break;
        case ggml_type::q4_k:
            block = block_q4_k;
            block_values = qk_k;
            break;
        case ggml_type::q5_k:
            block = block_q5_k;
            block_values = qk_k;
            break;
        case ggml_type::q6_k:
            block = block_q6_k;
            block_values = qk_k;
            break;
        default:
            throw eval_error(
                fmt::format("tensor type {} is not supported by this runner (supported: f32 f16 bf16 q4_0 q4_1 q5_0 q5_1 q8_0 "
                            "q2_k q3_k q4_k q5_k q6_k)",
                            ggml_type_name(type)));
    }
    const std::uint64_t block_bytes = ggml_type_bytes(type, block_values);  // the one size table (gguf_reader.cpp)
    for (std::uint64_t i = 0; i < elements / block_values; ++i) block(p + i * block_bytes, dst + i * block_values);
}

}  // namespace pkveval

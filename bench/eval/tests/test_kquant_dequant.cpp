/// K-quant dequantization (Q2_K, Q3_K, Q4_K, Q5_K, Q6_K): super-blocks written here byte by byte
/// decode to hand-computed values; a bit-layout packer written in this file (from the block
/// definitions, not shared with the library) round-trips pseudo-random quants, scales and mins over
/// two super-blocks; sizes, truncated input and unknown types are checked.

#include <cstdint>
#include <string>
#include <vector>

#include <doctest/doctest.h>

#include "eval_error.hpp"
#include "gguf_reader.hpp"

using namespace pkveval;

namespace {

constexpr std::uint32_t q2_k = 10, q3_k = 11, q4_k = 12, q5_k = 13, q6_k = 14;
constexpr std::uint16_t h_one = 0x3C00, h_half = 0x3800, h_minus_one = 0xBC00, h_quarter = 0x3400, h_minus_half = 0xB800;

void put_half(std::vector<std::uint8_t>& b, std::size_t at, std::uint16_t h) {
    b[at] = static_cast<std::uint8_t>(h & 0xFF);
    b[at + 1] = static_cast<std::uint8_t>(h >> 8);
}

std::vector<float> decode(std::uint32_t type, const std::vector<std::uint8_t>& bytes, std::uint64_t n = 256) {
    std::vector<float> y(n, -12345.0f);
    dequantize(type, bytes, n, y.data());
    return y;
}

/// Deterministic pseudo-random integers in [lo, hi].
struct lcg {
    std::uint32_t s;
    int next(int lo, int hi) {
        s = s * 1664525u + 1013904223u;
        return lo + static_cast<int>((s >> 8) % static_cast<std::uint32_t>(hi - lo + 1));
    }
};

// ---- Packers: the inverse of each block layout, formulated per byte of the block.

/// Q2_K {u8 scales[16]; u8 qs[64]; half d; half dmin}. q in [0,3]; sc, m in [0,15] (16 sub-blocks).
std::vector<std::uint8_t> pack_q2_k(const std::vector<int>& q, const std::vector<int>& sc, const std::vector<int>& m, std::uint16_t d,
                                    std::uint16_t dmin) {
    std::vector<std::uint8_t> b(84, 0);
    for (int s = 0; s < 16; ++s) b[s] = static_cast<std::uint8_t>(sc[s] | (m[s] << 4));
    for (int k = 0; k < 64; ++k)  // byte k holds values 128*(k/32) + 32*f + k%32 in its 2-bit fields f
        for (int f = 0; f < 4; ++f) b[16 + k] |= static_cast<std::uint8_t>(q[128 * (k / 32) + 32 * f + k % 32] << (2 * f));
    put_half(b, 80, d);
    put_half(b, 82, dmin);
    return b;
}

/// Q3_K {u8 hmask[32]; u8 qs[64]; u8 scales[12]; half d}. q in [-4,3]; sc in [-32,31].
std::vector<std::uint8_t> pack_q3_k(const std::vector<int>& q, const std::vector<int>& sc, std::uint16_t d) {
    std::vector<std::uint8_t> b(110, 0);
    for (int k = 0; k < 64; ++k)
        for (int f = 0; f < 4; ++f) b[32 + k] |= static_cast<std::uint8_t>((q[128 * (k / 32) + 32 * f + k % 32] & 3) << (2 * f));
    for (int l = 0; l < 32; ++l)  // hmask[l] bit t is set when value 32*t + l is non-negative
        for (int t = 0; t < 8; ++t)
            if (q[32 * t + l] >= 0) b[l] |= static_cast<std::uint8_t>(1 << t);
    for (int s = 0; s < 16; ++s) {
        const int u = sc[s] + 32;
        b[96 + (s % 8)] |= static_cast<std::uint8_t>((u & 0x0F) << (s < 8 ? 0 : 4));
        b[104 + (s % 4)] |= static_cast<std::uint8_t>((u >> 4) << (2 * (s / 4)));
    }
    put_half(b, 108, d);
    return b;
}

/// The 12-byte 6-bit scale/min block of Q4_K and Q5_K (8 sub-blocks).
void pack_scale_min(std::uint8_t* p, const std::vector<int>& sc, const std::vector<int>& m) {
    for (int j = 0; j < 4; ++j) {
        p[j] = static_cast<std::uint8_t>(sc[j] | ((sc[j + 4] >> 4) << 6));
        p[j + 4] = static_cast<std::uint8_t>(m[j] | ((m[j + 4] >> 4) << 6));
        p[j + 8] = static_cast<std::uint8_t>((sc[j + 4] & 0x0F) | ((m[j + 4] & 0x0F) << 4));
    }
}

/// Q4_K {half d; half dmin; u8 scales[12]; u8 qs[128]} (q in [0,15]) and
/// Q5_K {half d; half dmin; u8 scales[12]; u8 qh[32]; u8 qs[128]} (q in [0,31]). sc, m in [0,63].
std::vector<std::uint8_t> pack_q45_k(bool five, const std::vector<int>& q, const std::vector<int>& sc, const std::vector<int>& m,
                                     std::uint16_t d, std::uint16_t dmin) {
    std::vector<std::uint8_t> b(five ? 176 : 144, 0);
    put_half(b, 0, d);
    put_half(b, 2, dmin);
    pack_scale_min(b.data() + 4, sc, m);
    const std::size_t qs = five ? 48 : 16;
    for (int k = 0; k < 128; ++k) {  // byte k: low nibble value 64*(k/32) + k%32, high nibble that + 32
        const int v = 64 * (k / 32) + k % 32;
        b[qs + k] = static_cast<std::uint8_t>((q[v] & 0x0F) | ((q[v + 32] & 0x0F) << 4));
    }
    if (five)
        for (int l = 0; l < 32; ++l)  // qh[l] bit t is bit 4 of value 32*t + l
            for (int t = 0; t < 8; ++t) b[16 + l] |= static_cast<std::uint8_t>(((q[32 * t + l] >> 4) & 1) << t);
    return b;
}

/// Q6_K {u8 ql[128]; u8 qh[64]; i8 scales[16]; half d}. q in [-32,31]; sc in [-128,127].
std::vector<std::uint8_t> pack_q6_k(const std::vector<int>& q, const std::vector<int>& sc, std::uint16_t d) {
    std::vector<std::uint8_t> b(210, 0);
    for (int k = 0; k < 128; ++k) {  // ql[k]: low nibble value 128*(k/64) + k%64, high nibble that + 64
        const int v = 128 * (k / 64) + k % 64;
        b[k] = static_cast<std::uint8_t>(((q[v] + 32) & 0x0F) | (((q[v + 64] + 32) & 0x0F) << 4));
    }
    for (int k = 0; k < 64; ++k)  // qh[k]: 2-bit field f holds the top bits of value 128*(k/32) + 32*f + k%32
        for (int f = 0; f < 4; ++f)
            b[128 + k] |= static_cast<std::uint8_t>((((q[128 * (k / 32) + 32 * f + k % 32] + 32) >> 4) & 3) << (2 * f));
    for (int s = 0; s < 16; ++s) b[192 + s] = static_cast<std::uint8_t>(static_cast<std::int8_t>(sc[s]));
    put_half(b, 208, d);
    return b;
}

float half_value(std::uint16_t h) { return half_to_float(h); }

std::vector<int> random_ints(lcg& r, int n, int lo, int hi) {
    std::vector<int> v(n);
    for (int& x : v) x = r.next(lo, hi);
    return v;
}

}  // namespace

TEST_CASE("kquant: block sizes of the K-quants") {
    CHECK(ggml_type_bytes(q2_k, 256) == 84);
    CHECK(ggml_type_bytes(q3_k, 256) == 110);
    CHECK(ggml_type_bytes(q4_k, 256) == 144);
    CHECK(ggml_type_bytes(q5_k, 256) == 176);
    CHECK(ggml_type_bytes(q6_k, 256) == 210);
    CHECK(ggml_type_bytes(q4_k, 640 * 256) == 640 * 144);
    CHECK(ggml_type_bytes(q6_k, 128) == 0);  // not a whole super-block
    CHECK(ggml_type_bytes(q2_k, 257) == 0);
    CHECK(ggml_type_name(q3_k) == "q3_k");
    CHECK(ggml_type_name(q5_k) == "q5_k");
}

TEST_CASE("kquant: Q2_K hand-made block") {
    std::vector<std::uint8_t> b(84, 0);
    b[0] = 0x23;              // sub-block 0: scale 3, min 2
    b[2] = 0x0F;              // sub-block 2: scale 15, min 0
    b[4] = 0xF1;              // sub-block 4: scale 1, min 15
    b[6] = 0x52;              // sub-block 6: scale 2, min 5
    b[8] = 0x1A;              // sub-block 8: scale 10, min 1
    b[16 + 0] = 0xE7;         // qs[0] fields 3,1,2,3 -> values 0, 32, 64, 96
    b[16 + 32] = 0x02;        // qs[32] field 0 = 2 -> value 128
    put_half(b, 80, h_half);  // d = 0.5
    put_half(b, 82, h_one);   // dmin = 1
    const auto y = decode(q2_k, b);
    CHECK(y[0] == 2.5f);     // 0.5*3*3 - 1*2
    CHECK(y[1] == -2.0f);    // q = 0: -min
    CHECK(y[32] == 7.5f);    // 0.5*15*1 - 0
    CHECK(y[64] == -14.0f);  // 0.5*1*2 - 15
    CHECK(y[96] == -2.0f);   // 0.5*2*3 - 5
    CHECK(y[128] == 9.0f);   // 0.5*10*2 - 1
    CHECK(y[16] == 0.0f);    // sub-block 1: scale 0, min 0
    CHECK(y[255] == 0.0f);

    put_half(b, 82, h_minus_one);  // negative dmin: the mins are added
    const auto z = decode(q2_k, b);
    CHECK(z[0] == 6.5f);    // 0.5*3*3 + 2
    CHECK(z[64] == 16.0f);  // 0.5*1*2 + 15
    CHECK(z[96] == 8.0f);   // 0.5*2*3 + 5
}

TEST_CASE("kquant: Q3_K hand-made block (signed 6-bit scales, high-bit mask)") {
    std::vector<std::uint8_t> b(110, 0);
    // scales (stored +32): sub-block 0 -> -32 (0), 1 -> 31 (63), 8 -> 5 (37), 15 -> -1 (31), others 0 (32)
    const std::uint8_t sc[12] = {0x50, 0x0F, 0x00, 0x00, 0x00, 0x00, 0x00, 0xF0, 0xA8, 0xAB, 0xAA, 0x6A};
    for (int i = 0; i < 12; ++i) b[96 + i] = sc[i];
    b[0] = 0x11;        // hmask[0]: bit 0 (value 0) and bit 4 (value 128) set
    b[16] = 0x80;       // hmask[16]: bit 7 (value 240) set, bit 0 (value 16) clear
    b[32 + 0] = 0x01;   // value 0: low 1, high set -> q = 1
    b[32 + 16] = 0x03;  // value 16: low 3, high clear -> q = -1
    b[32 + 32] = 0x02;  // value 128: low 2, high set -> q = 2
    b[32 + 48] = 0xC0;  // value 240 (n=1, field 3, l=16): low 3, high set -> q = 3
    put_half(b, 108, h_one);
    const auto y = decode(q3_k, b);
    CHECK(y[0] == -32.0f);    // -32 * 1
    CHECK(y[1] == 128.0f);    // -32 * -4 (nothing set: q = -4)
    CHECK(y[16] == -31.0f);   // 31 * -1
    CHECK(y[17] == -124.0f);  // 31 * -4
    CHECK(y[128] == 10.0f);   // 5 * 2
    CHECK(y[129] == -20.0f);  // 5 * -4
    CHECK(y[240] == -3.0f);   // -1 * 3
    CHECK(y[241] == 4.0f);    // -1 * -4
    CHECK(y[32] == 0.0f);     // sub-block 2: scale 0

    put_half(b, 108, h_minus_half);
    const auto z = decode(q3_k, b);
    CHECK(z[0] == 16.0f);
    CHECK(z[240] == 1.5f);
}

TEST_CASE("kquant: Q4_K hand-made block (6-bit scales and mins, sub-blocks 0-3 and 4-7)") {
    // scales {1,2,3,4,17,33,50,63}, mins {0,5,10,20,40,63,1,2}
    std::vector<std::uint8_t> b(144, 0);
    const std::uint8_t sm[12] = {0x41, 0x82, 0xC3, 0xC4, 0x80, 0xC5, 0x0A, 0x14, 0x81, 0xF1, 0x12, 0x2F};
    for (int i = 0; i < 12; ++i) b[4 + i] = sm[i];
    for (int k = 0; k < 128; ++k) b[16 + k] = 0x11;  // every q = 1
    b[16] = 0xF0;                                    // value 0: q = 0, value 32: q = 15
    put_half(b, 0, h_one);
    put_half(b, 2, h_one);
    const auto y = decode(q4_k, b);
    const float want[8] = {1, -3, -7, -16, -23, -30, 49, 61};  // scale - min
    for (int s = 0; s < 8; ++s) {
        CAPTURE(s);
        CHECK(y[32 * s + 1] == want[s]);
        CHECK(y[32 * s + 31] == want[s]);
    }
    CHECK(y[0] == 0.0f);    // 1*0 - 0
    CHECK(y[32] == 25.0f);  // 2*15 - 5

    put_half(b, 0, h_half);       // d = 0.5
    put_half(b, 2, h_minus_one);  // negative dmin
    const auto z = decode(q4_k, b);
    CHECK(z[32 * 5 + 1] == 79.5f);  // 0.5*33 + 63
    CHECK(z[32 * 7 + 1] == 33.5f);  // 0.5*63 + 2
    CHECK(z[32 * 3 + 1] == 22.0f);  // 0.5*4 + 20
}

TEST_CASE("kquant: Q5_K hand-made block (fifth bit from qh)") {
    std::vector<std::uint8_t> b(176, 0);
    const std::uint8_t sm[12] = {0x41, 0x82, 0xC3, 0xC4, 0x80, 0xC5, 0x0A, 0x14, 0x81, 0xF1, 0x12, 0x2F};
    for (int i = 0; i < 12; ++i) b[4 + i] = sm[i];
    for (int l = 0; l < 32; ++l) b[16 + l] = 0xAA;  // bit 4 set in sub-blocks 1,3,5,7
    b[48 + 1] = 0x3F;                               // value 1: q = 15; value 33: q = 3 | 16
    put_half(b, 0, h_one);
    put_half(b, 2, h_minus_one);  // y = scale*q + min
    const auto y = decode(q5_k, b);
    const float want[8] = {0, 37, 10, 84, 40, 591, 1, 1010};  // 16*scale (odd sub-blocks) + min
    for (int s = 0; s < 8; ++s) {
        CAPTURE(s);
        CHECK(y[32 * s] == want[s]);
        CHECK(y[32 * s + 30] == want[s]);
    }
    CHECK(y[1] == 15.0f);   // 1*15 + 0
    CHECK(y[33] == 43.0f);  // 2*19 + 5

    put_half(b, 2, h_quarter);
    const auto z = decode(q5_k, b);
    CHECK(z[32 * 4] == -10.0f);   // 0 - 0.25*40
    CHECK(z[32 * 7] == 1007.5f);  // 63*16 - 0.25*2
}

TEST_CASE("kquant: Q6_K hand-made block (two high bits, signed scales)") {
    std::vector<std::uint8_t> b(210, 0);
    b[0] = 0x3F;         // value 0 low 15, value 64 low 3
    b[32] = 0x70;        // value 32 low 0, value 96 low 7
    b[128] = 0xE4;       // qh[0] fields 0,1,2,3 -> high bits of values 0, 32, 64, 96
    b[64] = 0x01;        // value 128 low 1
    b[128 + 32] = 0x03;  // value 128 high 3
    b[192 + 0] = 1;
    b[192 + 2] = 0xFE;  // -2
    b[192 + 4] = 3;
    b[192 + 6] = 0x80;  // -128
    b[192 + 8] = 4;
    b[192 + 15] = 0x7F;  // 127
    put_half(b, 208, h_half);
    const auto y = decode(q6_k, b);
    CHECK(y[0] == -8.5f);       // 0.5*1*(15-32)
    CHECK(y[32] == 16.0f);      // 0.5*-2*(16-32)
    CHECK(y[64] == 4.5f);       // 0.5*3*(32+3-32)
    CHECK(y[96] == -1472.0f);   // 0.5*-128*(48+7-32)
    CHECK(y[128] == 34.0f);     // 0.5*4*(48+1-32)
    CHECK(y[1] == -16.0f);      // 0.5*1*(0-32)
    CHECK(y[255] == -2032.0f);  // 0.5*127*-32
}

TEST_CASE("kquant: pseudo-random super-blocks round-trip through a test-side packer") {
    lcg r{12345};
    const std::uint16_t ds[2] = {h_half, h_quarter}, dmins[2] = {h_one, h_minus_half};
    for (int rep = 0; rep < 20; ++rep) {
        CAPTURE(rep);
        std::vector<std::uint8_t> b2, b3, b4, b5, b6;
        std::vector<float> w2, w3, w4, w5, w6;
        for (int blk = 0; blk < 2; ++blk) {  // two super-blocks: the block stride is checked too
            const float d = half_value(ds[blk]), dmin = half_value(dmins[blk]);
            {
                const auto q = random_ints(r, 256, 0, 3), sc = random_ints(r, 16, 0, 15), m = random_ints(r, 16, 0, 15);
                const auto blk_bytes = pack_q2_k(q, sc, m, ds[blk], dmins[blk]);
                b2.insert(b2.end(), blk_bytes.begin(), blk_bytes.end());
                for (int i = 0; i < 256; ++i)
                    w2.push_back(d * static_cast<float>(sc[i / 16]) * static_cast<float>(q[i]) - dmin * static_cast<float>(m[i / 16]));
            }
            {
                const auto q = random_ints(r, 256, -4, 3), sc = random_ints(r, 16, -32, 31);
                const auto blk_bytes = pack_q3_k(q, sc, ds[blk]);
                b3.insert(b3.end(), blk_bytes.begin(), blk_bytes.end());
                for (int i = 0; i < 256; ++i) w3.push_back(d * static_cast<float>(sc[i / 16]) * static_cast<float>(q[i]));
            }
            for (bool five : {false, true}) {
                const auto q = random_ints(r, 256, 0, five ? 31 : 15), sc = random_ints(r, 8, 0, 63), m = random_ints(r, 8, 0, 63);
                const auto blk_bytes = pack_q45_k(five, q, sc, m, ds[blk], dmins[blk]);
                auto& bytes = five ? b5 : b4;
                auto& want = five ? w5 : w4;
                bytes.insert(bytes.end(), blk_bytes.begin(), blk_bytes.end());
                for (int i = 0; i < 256; ++i)
                    want.push_back(d * static_cast<float>(sc[i / 32]) * static_cast<float>(q[i]) - dmin * static_cast<float>(m[i / 32]));
            }
            {
                const auto q = random_ints(r, 256, -32, 31), sc = random_ints(r, 16, -128, 127);
                const auto blk_bytes = pack_q6_k(q, sc, ds[blk]);
                b6.insert(b6.end(), blk_bytes.begin(), blk_bytes.end());
                for (int i = 0; i < 256; ++i) w6.push_back(d * static_cast<float>(sc[i / 16]) * static_cast<float>(q[i]));
            }
        }
        CHECK(decode(q2_k, b2, 512) == w2);
        CHECK(decode(q3_k, b3, 512) == w3);
        CHECK(decode(q4_k, b4, 512) == w4);
        CHECK(decode(q5_k, b5, 512) == w5);
        CHECK(decode(q6_k, b6, 512) == w6);
    }
}

TEST_CASE("kquant: truncated input, partial super-blocks and unknown types are rejected") {
    const std::uint32_t types[5] = {q2_k, q3_k, q4_k, q5_k, q6_k};
    for (std::uint32_t t : types) {
        CAPTURE(t);
        const std::uint64_t size = ggml_type_bytes(t, 512);
        REQUIRE(size > 0);
        std::vector<std::uint8_t> bytes(size, 0);
        std::vector<float> y(512);
        CHECK_NOTHROW(dequantize(t, bytes, 512, y.data()));
        const std::vector<std::uint8_t> short_bytes(size - 1, 0);
        CHECK_THROWS_AS(dequantize(t, short_bytes, 512, y.data()), eval_error);
        CHECK_THROWS_AS(dequantize(t, bytes, 300, y.data()), eval_error);  // not a multiple of 256
    }
    std::vector<std::uint8_t> block(292, 0);
    std::vector<float> y(256);
    for (std::uint32_t t : {15u, 99u}) {  // q8_k (known size, no decoder) and an unknown type
        CAPTURE(t);
        try {
            dequantize(t, block, 256, y.data());
            FAIL("type accepted");
        } catch (const eval_error& e) {
            CHECK(std::string(e.what()).find(ggml_type_name(t)) != std::string::npos);
        }
    }
}

#pragma once
/// @file concepts.hpp
/// The three building blocks of a PatternKV cache, as C++20 concepts. The library's own
/// implementations (policies.hpp) are static_assert-ed to model them; a user type that models a
/// concept can be checked the same way and tested with the library's conformance tests.

#include <concepts>
#include <cstdint>
#include <span>

namespace patternkv {

/// Mines the initial pattern bank of one (sequence, KV head) from a prompt and proposes the pattern
/// added at each flush.
///  - mine(x [tokens][d], d, head, is_v, bank [capacity][d]) writes patterns (values representable
///    in fp16) and returns how many (0 = no patterns).
///  - propose(window [n][d], d, centre [d]) writes a new pattern and returns true, or returns false.
template <class M>
concept PatternMiner = requires(const M& m, std::span<const float> x, int d, int head, bool is_v, std::span<float> bank,
                                std::span<float> centre) {
    { m.mine(x, d, head, is_v, bank) } -> std::same_as<int>;
    { m.propose(x, d, centre) } -> std::same_as<bool>;
};

/// Decides per V token whether it is stored as the residual v - m (true) or raw (false).
template <class G>
concept VGate = requires(const G& g, std::span<const float> v, std::span<const float> m) {
    { g.residualize(v, m) } -> std::same_as<bool>;
};

/// Aligns vectors to patterns and quantizes residual rows of a page into packed storage.
///  - align_prefill / align_flush(x [d], bank [n][d], n) -> index of the chosen pattern
///    (squared L2 at prefill, min-max distance at a flush);
///  - quantize(rows [tokens][d], codes, scale_min) packs one page's rows (scale_min as fp16 bit
///    pairs: scale, min);
///  - dequantize(codes, scale_min, t, out [d]) reads row t back.
template <class Q>
concept ResidualQuantizer = requires(const Q& q, std::span<const float> x, std::span<const float> bank, int n,
                                     std::span<std::uint32_t> codes, std::span<std::uint16_t> sm, int t, std::span<float> out) {
    { q.align_prefill(x, bank, n) } -> std::same_as<int>;
    { q.align_flush(x, bank, n) } -> std::same_as<int>;
    { q.code_words() } -> std::same_as<int>;
    { q.groups() } -> std::same_as<int>;
    q.quantize(x, codes, sm);
    q.dequantize(std::span<const std::uint32_t>(codes), std::span<const std::uint16_t>(sm), t, out);
};

}  // namespace patternkv

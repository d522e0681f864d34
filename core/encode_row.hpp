#pragma once
// One token of a page being encoded (method.md sections 4-5): align it to a pattern of its bank,
// let the V gate decide, and form the row the quantizer sees. Every backend encodes through this
// one function; how a pattern is chosen and how the gate decides are its policy arguments.

#include "platform.hpp"

namespace patternkv::core {

/// What encode_row decided for one token.
struct row_choice {
    int index;      ///< pattern index stored for the token (0 when the bank is empty)
    bool residual;  ///< the row holds x - m (K: whenever the bank has a pattern; V: when the gate says so)
};

/// Writes the row to quantize for token x [d] into out [d]: x - m, m = bank row align(x, bank, nb),
/// or x itself when the bank is empty (nb = 0) or, for V, gate(x, m) is false.
template <class Align, class Gate>
PKV_HD row_choice encode_row(const float* x, const float* bank, int nb, int d, bool is_v, const Align& align, const Gate& gate,
                             float* out) {
    row_choice c{0, false};
    if (nb > 0) c.index = align(x, bank, nb);
    const float* m = bank + c.index * d;
    if (nb > 0) c.residual = !is_v || gate(x, m);
    for (int j = 0; j < d; ++j) out[j] = c.residual ? x[j] - m[j] : x[j];
    return c;
}

}  // namespace patternkv::core

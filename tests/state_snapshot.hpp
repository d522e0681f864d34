#pragma once
// Byte snapshot of everything a layer_cache stores (for bit-identity and "unchanged" checks).
#include <cstdint>
#include <cstring>
#include <vector>

#include "src/layer_cache_state.hpp"

namespace pkv_test {

template <class T>
void append_bytes(std::vector<std::uint8_t>& out, const std::vector<T>& v) {
    const auto* p = reinterpret_cast<const std::uint8_t*>(v.data());
    out.insert(out.end(), p, p + v.size() * sizeof(T));
}

/// Codes, scales/mins, indices, gate bits, banks, bank sizes, windows, lengths, block tables and the
/// pool's free list, as bytes.
inline std::vector<std::uint8_t> snapshot(const patternkv::layer_cache& cache) {
    const patternkv::layer_cache_state& s = patternkv::state_of(cache);
    std::vector<std::uint8_t> out;
    append_bytes(out, s.k_codes);
    append_bytes(out, s.v_codes);
    append_bytes(out, s.v_gate);
    append_bytes(out, s.k_sm);
    append_bytes(out, s.v_sm);
    append_bytes(out, s.k_index);
    append_bytes(out, s.v_index);
    append_bytes(out, s.k_bank);
    append_bytes(out, s.v_bank);
    append_bytes(out, s.k_bank_size);
    append_bytes(out, s.v_bank_size);
    append_bytes(out, s.window_k);
    append_bytes(out, s.window_v);
    append_bytes(out, s.pages);
    append_bytes(out, s.window_count);
    append_bytes(out, s.block_table);
    append_bytes(out, s.free_pages);
    return out;
}

}  // namespace pkv_test

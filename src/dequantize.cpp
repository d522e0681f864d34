// layer_cache::dequantize: the cache's reconstruction x-hat = deq(code) + pattern, token by token.
#include <fmt/format.h>

#include <patternkv/error.hpp>
#include <patternkv/layer_cache.hpp>

#include "core/page_quantizer.hpp"
#include "input_reader.hpp"
#include "layer_cache_state.hpp"

namespace patternkv {

void layer_cache::dequantize(int seq, tensor_view k, tensor_view v) const {
    state_->impl->sync_to_host(*state_);  // a GPU cache's data lives on the device
    const layer_cache_state& s = *state_;
    if (seq < 0 || seq >= s.batch) throw error(fmt::format("dequantize: sequence index {} out of range [0, {})", seq, s.batch));
    const std::int64_t T = s.tokens(seq);
    const int d = s.d(), R = s.geom.tokens;
    detail::check_shape("dequantize k", k, T, s.heads(), d);
    detail::check_shape("dequantize v", v, T, s.heads(), d);
    if (k.type != dtype::f32 || v.type != dtype::f32) throw error("dequantize: k and v must be f32");
    float* ko = static_cast<float*>(k.data);
    float* vo = static_cast<float*>(v.data);
    float row[core::max_head_dim];
    for (int h = 0; h < s.heads(); ++h) {
        const core::head_pages hp = s.head(seq, h);
        const std::uint16_t* kb = s.bank(false, seq, h);
        const std::uint16_t* vb = s.bank(true, seq, h);
        // token order: the sink rows, the pages, the window (the rows after the sink)
        const std::int64_t sink = s.geom.sink_rows(T), paged = static_cast<std::int64_t>(s.pages[seq]) * R;
        for (std::int64_t t = 0; t < T; ++t) {
            const std::int64_t u = t - sink;
            const int p = static_cast<int>(u / R), i = static_cast<int>(u % R);
            if (u >= 0 && u < paged) {
                const core::page_view pv = hp.page(p);
                core::dequantize_k_row(s.geom, pv, i, row);
                const std::uint16_t* km =
                    s.side_has_patterns(false) ? kb + core::pattern_index(pv.k_index, i, s.geom.index_bits) * d : nullptr;
                for (int j = 0; j < d; ++j) ko[k.offset(t, h, j)] = km != nullptr ? row[j] + core::half_to_float(km[j]) : row[j];
                core::dequantize_v_row(s.geom, pv, i, row);
                const bool gated = s.has_patterns() && core::gate_bit(pv.v_gate, i);
                const std::uint16_t* vm = gated ? vb + core::pattern_index(pv.v_index, i, s.geom.index_bits) * d : nullptr;
                for (int j = 0; j < d; ++j) vo[v.offset(t, h, j)] = vm != nullptr ? row[j] + core::half_to_float(vm[j]) : row[j];
            } else {
                const std::size_t row = static_cast<std::size_t>(u < 0 ? t : sink + u - paged);
                const std::uint16_t* wk = s.window(false, seq, h) + row * d;
                const std::uint16_t* wv = s.window(true, seq, h) + row * d;
                for (int j = 0; j < d; ++j) {
                    ko[k.offset(t, h, j)] = core::half_to_float(wk[j]);
                    vo[v.offset(t, h, j)] = core::half_to_float(wv[j]);
                }
            }
        }
    }
}

}  // namespace patternkv

#pragma once
/// @file kv_method.hpp
/// The KV-cache methods under comparison: names, configs, and one method's caches for every layer.

#include <chrono>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <patternkv/patternkv.hpp>

#include "model.hpp"

namespace pkveval {

/// A method to evaluate: "fp32" (exact cache in this runner) or a libpatternkv config.
struct method_spec {
    std::string name;
    std::string family;     ///< the name without its bit widths: "kivi", "patternkv-nogate", "fp32"
    bool exact = false;     ///< fp32: no library, exact attention
    patternkv::config cfg;  ///< library config (shape filled from the model)
    /// Diagnosis (`+exact_sink=N`): the first N prompt tokens are attended at full precision and the
    /// rest as the cache dequantizes them, by exact attention over the dequantized cache, which is
    /// slower than attention on codes. Bits count those tokens once more, as fp16 K and V rows.
    int exact_sink = 0;
};

using setting = std::pair<std::string, std::string>;

/// Names accepted by parse_method, for --help.
std::string method_names_help();
/// The default method list, in table order.
std::vector<std::string> default_methods();
/// "kivi-2" -> kivi_config(2), "patternkv-4-2" -> K 4 bits, V 2 bits, with the model's shape and every `sets` entry applied (not for fp32).
/// Throws eval_error for unknown names and for settings the library rejects.
method_spec parse_method(const std::string& name, const std::vector<setting>& sets, const model_config& mc);

/// One method's caches for all layers of one sequence, and the time spent in them. Sliding-window
/// layers (model_config::is_local) keep their K/V exact in every method: only global layers, whose
/// cache grows with the context, go through the library (docs/accuracy.md, "Sliding-window layers").
class method_cache {
public:
    /// Throws eval_error naming the method when the library rejects its config for this model.
    method_cache(method_spec spec, const model_config& mc, std::int64_t capacity);

    /// Hands layer `layer` the prompt's post-RoPE k, v [tokens][n_kv_heads][head_dim].
    void prefill(int layer, const float* k, const float* v, int tokens);
    /// Appends one token's k, v [n_kv_heads][head_dim] and attends q [n_heads][head_dim] over the
    /// cache (a sliding-window layer: over its window) into out [n_heads][head_dim].
    void step(int layer, const float* q, const float* k, const float* v, float* out);

    const method_spec& spec() const { return spec_; }
    /// The library cache of `layer`, or nullptr where the layer is kept exact (fp32, sliding window).
    const patternkv::layer_cache* library_cache(int layer) const {
        return library_index_[layer] < 0 ? nullptr : &caches_[library_index_[layer]];
    }
    /// Stored bits per cached K/V scalar over the layers the method quantizes (32 for fp32).
    double bits_per_element() const;
    /// Bytes held by the quantized layers (fp32: by every layer at 4 bytes per element).
    std::uint64_t bytes() const;
    /// Seconds spent in step() (append + attend).
    double step_seconds() const { return step_seconds_; }

private:
    /// Kept exact here instead of in a library cache: every layer of fp32, sliding-window layers of all.
    bool exact_layer(int layer) const;

    method_spec spec_;
    model_config mc_;
    std::int64_t capacity_;
    std::vector<patternkv::layer_cache> caches_;  // library methods: the quantized layers
    std::vector<int> library_index_;              // [layer]: index into caches_, or -1 for an exact layer
    std::vector<std::vector<float>> k_, v_;       // exact layers: [layer][token][kv_dim] (empty for the others)
    std::vector<int> size_;                       // exact layers: tokens per layer
    std::vector<float> scratch_;
    std::vector<std::vector<float>> sink_k_, sink_v_;  // exact_sink: [layer][token][kv_dim] of the first prompt tokens
    std::vector<float> dequant_k_, dequant_v_;         // exact_sink: one layer's dequantized cache
    double step_seconds_ = 0.0;

    /// Exact attention of every query head over k, v [n][kv_dim] (a sliding-window layer: its window).
    void attend_all_heads(int layer, const float* q, const float* k, const float* v, int n, float* out);
    /// exact_sink: attention over layer `layer`'s dequantized cache, its first tokens exact.
    void attend_dequantized(int layer, const float* q, float* out);
    /// Bytes of the fp16 sink rows exact_sink counts, over the quantized layers.
    std::uint64_t sink_bytes() const;
};

}  // namespace pkveval

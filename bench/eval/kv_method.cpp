/// @file kv_method.cpp
/// Method names map onto libpatternkv presets; "fp32" is an exact cache kept here so that the
/// reference goes through the same decode path as every other method.

#include "kv_method.hpp"

#include <charconv>
#include <cmath>

#include <fmt/format.h>
#include <tbb/parallel_for.h>

#include "eval_error.hpp"
#include "matvec.hpp"

namespace pkveval {

std::string method_names_help() {
    return "fp32, kivi-B, pertoken-B, patternkv-B, patternkv-B-nogate; B = 2, 3, 4 or 8 bits for K and V, "
           "or K-V for separate widths (kivi-4-2: K 4 bits, V 2 bits); +key=value appends a config setting "
           "for that method only (patternkv-2+num_patterns=8); +exact_sink=N (diagnosis, slow) attends the first N "
           "prompt tokens at full precision over the dequantized cache and counts them as fp16";
}

std::vector<std::string> default_methods() {
    // KIVI's 2/3/4/8-bit curve (the equal-storage yardstick; 8 bits so that PatternKV-4, which stores
    // more than KIVI-4, has KIVI points on both sides), PatternKV's defaults at 2/3/4 bits, and two
    // ablations at 2 bits: no attention sink, and the paper's setting (32 patterns, a bank of up to 256
    // with one-byte indices, every K channel, no sink)
    return {"fp32",
            "kivi-8",
            "kivi-4",
            "kivi-3",
            "kivi-2",
            "patternkv-4",
            "patternkv-3",
            "patternkv-2",
            "patternkv-2+sink_tokens=0",
            "patternkv-2+num_patterns=32+max_patterns=256+k_channel_select=false+sink_tokens=0+tokens_per_pattern=0"};
}

namespace {

/// "4" -> 4; anything but a plain positive integer -> -1.
int parse_bits(std::string_view s) {
    int b = 0;
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), b);
    return ec == std::errc() && p == s.data() + s.size() && b > 0 ? b : -1;
}

}  // namespace

method_spec parse_method(const std::string& name, const std::vector<setting>& sets, const model_config& mc) {
    method_spec s;
    s.name = name;
    if (name == "fp32") {
        s.exact = true;
        s.family = "fp32";
        return s;
    }
    // family-K[-V][-nogate][+key=value...]
    const std::string_view full(name);
    const std::string_view base = full.substr(0, full.find('+'));
    std::vector<setting> own;  // settings of this method only
    for (std::string_view rest = full.substr(base.size()); !rest.empty();) {
        rest.remove_prefix(1);
        const std::string_view item = rest.substr(0, rest.find('+'));
        rest.remove_prefix(item.size());
        const auto eq = item.find('=');
        if (eq == std::string_view::npos || eq == 0) throw eval_error(fmt::format("method '{}': '{}' is not key=value", name, item));
        own.emplace_back(std::string(item.substr(0, eq)), std::string(item.substr(eq + 1)));
    }
    std::vector<std::string_view> parts;
    for (std::string_view rest(base);;) {
        const auto dash = rest.find('-');
        parts.push_back(rest.substr(0, dash));
        if (dash == std::string_view::npos) break;
        rest.remove_prefix(dash + 1);
    }
    const bool nogate = parts.size() > 2 && parts.back() == "nogate";
    if (nogate) parts.pop_back();
    const int kb = parts.size() >= 2 ? parse_bits(parts[1]) : -1;
    const int vb = parts.size() == 3 ? parse_bits(parts[2]) : parts.size() == 2 ? kb : -1;
    const std::string_view fam = parts[0];
    const bool known = fam == "kivi" || fam == "pertoken" || fam == "patternkv";
    if (!known || kb < 0 || vb < 0 || (nogate && fam != "patternkv"))
        throw eval_error(fmt::format("unknown method '{}' (known: {})", name, method_names_help()));
    s.cfg = fam == "kivi"       ? patternkv::kivi_config(kb)
            : fam == "pertoken" ? patternkv::per_token_config(kb)
                                : patternkv::patternkv_config(kb);
    s.cfg.v_bits = vb;
    if (nogate) s.cfg.gate = patternkv::gate_mode::always;
    s.family = std::string(fam) + (nogate ? "-nogate" : "") + std::string(full.substr(base.size()));
    s.cfg.head_dim = mc.head_dim;
    s.cfg.num_kv_heads = mc.n_kv_heads;
    s.cfg.num_q_heads = mc.n_heads;
    std::vector<setting> all = sets;
    all.insert(all.end(), own.begin(), own.end());  // a method's own settings win
    for (const auto& [key, value] : all) {
        if (key == "exact_sink") {
            s.exact_sink = value == "0" ? 0 : parse_bits(value);
            if (s.exact_sink < 0) throw eval_error(fmt::format("method {}: exact_sink={} is not a count of tokens", name, value));
            continue;
        }
        try {
            s.cfg.set(key, value);
        } catch (const patternkv::error& e) {
            throw eval_error(fmt::format("--set {}={} rejected for method {}: {}", key, value, name, e.what()));
        }
    }
    return s;
}

method_cache::method_cache(method_spec spec, const model_config& mc, std::int64_t capacity)
    : spec_(std::move(spec)), mc_(mc), capacity_(capacity), library_index_(mc.n_layers, -1), size_(mc.n_layers, 0) {
    k_.resize(mc.n_layers);
    v_.resize(mc.n_layers);
    for (int l = 0; l < mc.n_layers; ++l) {
        if (!exact_layer(l)) continue;
        k_[l].resize(static_cast<std::size_t>(capacity) * mc.kv_dim());
        v_[l].resize(static_cast<std::size_t>(capacity) * mc.kv_dim());
    }
    if (spec_.exact || mc.local_layers() > 0 || spec_.exact_sink > 0) scratch_.resize(static_cast<std::size_t>(capacity) * mc.n_heads);
    try {
        for (int l = 0; l < mc.n_layers; ++l) {
            if (exact_layer(l)) continue;
            library_index_[l] = static_cast<int>(caches_.size());
            caches_.emplace_back(spec_.cfg, 1, capacity);
        }
    } catch (const patternkv::error& e) {
        throw eval_error(fmt::format("method {} cannot run on this model (head_dim {}, {} q / {} kv heads): {}\n  config: {}", spec_.name,
                                     mc.head_dim, mc.n_heads, mc.n_kv_heads, e.what(), spec_.cfg.describe()));
    }
}

void method_cache::prefill(int layer, const float* k, const float* v, int tokens) {
    if (exact_layer(layer)) {
        if (tokens > capacity_) throw eval_error("fp32 cache: prompt exceeds capacity");
        std::copy_n(k, static_cast<std::size_t>(tokens) * mc_.kv_dim(), k_[layer].data());
        std::copy_n(v, static_cast<std::size_t>(tokens) * mc_.kv_dim(), v_[layer].data());
        size_[layer] = tokens;
        return;
    }
    if (spec_.exact_sink > 0) {
        sink_k_.resize(mc_.n_layers);
        sink_v_.resize(mc_.n_layers);
        const std::size_t n = static_cast<std::size_t>(std::min(spec_.exact_sink, tokens)) * mc_.kv_dim();
        sink_k_[layer].assign(k, k + n);
        sink_v_[layer].assign(v, v + n);
    }
    try {
        caches_[library_index_[layer]].prefill(0, patternkv::view_f32(k, tokens, mc_.n_kv_heads, mc_.head_dim),
                                               patternkv::view_f32(v, tokens, mc_.n_kv_heads, mc_.head_dim));
    } catch (const patternkv::error& e) {
        throw eval_error(fmt::format("method {}: layer {} prefill of {} tokens failed: {}", spec_.name, layer, tokens, e.what()));
    }
}

void method_cache::step(int layer, const float* q, const float* k, const float* v, float* out) {
    const auto t0 = std::chrono::steady_clock::now();
    const int hd = mc_.head_dim, kvd = mc_.kv_dim();
    if (exact_layer(layer)) {
        int& n = size_[layer];
        if (n >= capacity_) throw eval_error("fp32 cache: capacity exhausted");
        std::copy_n(k, kvd, k_[layer].data() + static_cast<std::size_t>(n) * kvd);
        std::copy_n(v, kvd, v_[layer].data() + static_cast<std::size_t>(n) * kvd);
        ++n;
        attend_all_heads(layer, q, k_[layer].data(), v_[layer].data(), n, out);
    } else {
        patternkv::layer_cache& cache = caches_[library_index_[layer]];
        try {
            cache.append(patternkv::view_f32(k, 1, mc_.n_kv_heads, hd), patternkv::view_f32(v, 1, mc_.n_kv_heads, hd));
            if (spec_.exact_sink > 0)
                attend_dequantized(layer, q, out);
            else
                cache.attend(patternkv::view_f32(q, 1, mc_.n_heads, hd), patternkv::view_f32(out, 1, mc_.n_heads, hd));
        } catch (const patternkv::error& e) {
            throw eval_error(fmt::format("method {}: layer {} decode step failed: {}", spec_.name, layer, e.what()));
        }
    }
    step_seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

void method_cache::attend_all_heads(int layer, const float* q, const float* k, const float* v, int n, float* out) {
    const int hd = mc_.head_dim, kvd = mc_.kv_dim(), group = mc_.n_heads / mc_.n_kv_heads;
    const int first = mc_.first_visible(layer, n - 1);
    const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
    tbb::parallel_for(0, mc_.n_heads, [&](int h) {
        const int kvh = h / group;
        attend_exact(q + h * hd, k + kvh * hd, v + kvh * hd, first, n, kvd, hd, scale,
                     scratch_.data() + static_cast<std::size_t>(h) * capacity_, out + h * hd);
    });
}

void method_cache::attend_dequantized(int layer, const float* q, float* out) {
    const patternkv::layer_cache& cache = caches_[library_index_[layer]];
    const int n = static_cast<int>(cache.size(0)), hd = mc_.head_dim;
    dequant_k_.resize(static_cast<std::size_t>(capacity_) * mc_.kv_dim());
    dequant_v_.resize(dequant_k_.size());
    cache.dequantize(0, patternkv::view_f32(dequant_k_.data(), n, mc_.n_kv_heads, hd),
                     patternkv::view_f32(dequant_v_.data(), n, mc_.n_kv_heads, hd));
    std::copy(sink_k_[layer].begin(), sink_k_[layer].end(), dequant_k_.begin());
    std::copy(sink_v_[layer].begin(), sink_v_[layer].end(), dequant_v_.begin());
    attend_all_heads(layer, q, dequant_k_.data(), dequant_v_.data(), n, out);
}

std::uint64_t method_cache::sink_bytes() const {
    std::uint64_t n = 0;
    for (const auto& rows : sink_k_) n += 2 * 2 * rows.size();  // fp16 K and V
    return n;
}

bool method_cache::exact_layer(int layer) const { return spec_.exact || mc_.is_local(layer); }

std::uint64_t method_cache::bytes() const {
    if (spec_.exact) {
        std::uint64_t n = 0;
        for (int s : size_) n += static_cast<std::uint64_t>(s) * mc_.kv_dim() * 2 * 4;
        return n;
    }
    std::uint64_t n = sink_bytes();
    for (const auto& c : caches_) n += c.memory().total_bytes();
    return n;
}

double method_cache::bits_per_element() const {
    if (spec_.exact) return 32.0;
    std::uint64_t bytes = sink_bytes(), elements = 0;
    for (const auto& c : caches_) {
        const patternkv::memory_report m = c.memory();
        bytes += m.total_bytes();
        elements += m.elements;
    }
    return elements == 0 ? 0.0 : 8.0 * static_cast<double>(bytes) / static_cast<double>(elements);
}

}  // namespace pkveval

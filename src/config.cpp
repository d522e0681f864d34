// Config validation, defaults of the named methods, and key=value setting.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <limits>

#include <fmt/format.h>

#include <patternkv/config.hpp>
#include <patternkv/error.hpp>
#include <patternkv/memory_report.hpp>
#include <patternkv/tensor_view.hpp>

#include "core/packing.hpp"
#include "core/platform.hpp"

namespace patternkv {
namespace {

[[noreturn]] void invalid(const char* field, const std::string& value, const std::string& why) {
    throw error(fmt::format("invalid config: {} = {} ({})", field, value, why));
}

void require(bool ok, const char* field, long long value, const std::string& why) {
    if (!ok) invalid(field, std::to_string(value), why);
}

const char* gate_name(gate_mode g) {
    switch (g) {
        case gate_mode::z_test:
            return "z_test";
        case gate_mode::always:
            return "always";
        case gate_mode::never:
            return "never";
    }
    return "?";
}

long long parse_int(const std::string& key, const std::string& text) {
    char* end = nullptr;
    const long long v = std::strtoll(text.c_str(), &end, 10);
    if (text.empty() || *end != '\0') throw error(fmt::format("config key '{}': '{}' is not an integer", key, text));
    return v;
}

double parse_double(const std::string& key, const std::string& text) {
    char* end = nullptr;
    const double v = std::strtod(text.c_str(), &end);
    if (text.empty() || *end != '\0') throw error(fmt::format("config key '{}': '{}' is not a number", key, text));
    return v;
}

bool parse_bool(const std::string& key, const std::string& text) {
    if (text == "true" || text == "1") return true;
    if (text == "false" || text == "0") return false;
    throw error(fmt::format("config key '{}': '{}' is not a boolean (true, false, 1 or 0)", key, text));
}

int parse_small_int(const std::string& key, const std::string& text) {
    const long long v = parse_int(key, text);
    if (v < std::numeric_limits<int>::min() || v > std::numeric_limits<int>::max())
        throw error(fmt::format("config key '{}': {} is out of range", key, text));
    return static_cast<int>(v);
}

}  // namespace

const char* dtype_name(dtype t) {
    switch (t) {
        case dtype::f32:
            return "f32";
        case dtype::f16:
            return "f16";
        case dtype::bf16:
            return "bf16";
    }
    return "?";
}

float config::scale() const {
    return softmax_scale != 0.0f ? softmax_scale : static_cast<float>(1.0 / std::sqrt(static_cast<double>(head_dim)));
}

int config::bank_capacity() const {
    if (num_patterns == 0) return 0;
    if (max_patterns > 0) return max_patterns;
    // A bank that follows the context length grows by flushes up to num_patterns; without that rule
    // the bank doubles by flushes (one Chebyshev centre each) before it stops growing, as in the paper.
    return tokens_per_pattern > 0 ? num_patterns : std::min(2 * num_patterns, core::max_bank_patterns);
}

void config::validate() const {
    require(head_dim >= 1 && head_dim <= core::max_head_dim, "head_dim", head_dim, fmt::format("must be in [1, {}]", core::max_head_dim));
    require(num_kv_heads >= 1, "num_kv_heads", num_kv_heads, "must be >= 1");
    require(num_q_heads >= 1 && num_q_heads % num_kv_heads == 0, "num_q_heads", num_q_heads,
            fmt::format("must be a positive multiple of num_kv_heads = {}", num_kv_heads));
    require(core::supported_bits(k_bits), "k_bits", k_bits, "supported: 2, 3, 4, 8");
    require(core::supported_bits(v_bits), "v_bits", v_bits, "supported: 2, 3, 4, 8");
    require(residual_length >= 1 && residual_length <= core::max_page_tokens, "residual_length", residual_length,
            fmt::format("must be in [1, {}]", core::max_page_tokens));
    if (k_mode == k_quant_mode::per_channel)
        require(k_group >= 1 && residual_length % k_group == 0, "k_group", k_group,
                fmt::format("must divide residual_length = {}", residual_length));
    else
        require(k_token_group_size() >= 1 && head_dim % k_token_group_size() == 0, "k_token_group", k_token_group,
                fmt::format("must divide head_dim = {} (0 = head_dim)", head_dim));
    require(v_group_size() >= 1 && head_dim % v_group_size() == 0, "v_group", v_group,
            fmt::format("must divide head_dim = {} (0 = head_dim)", head_dim));
    require(max_patterns >= 0 && max_patterns <= core::max_bank_patterns, "max_patterns", max_patterns,
            fmt::format("must be in [0, {}] (0 = from num_patterns; pattern indices take at most one byte)", core::max_bank_patterns));
    require(num_patterns >= 0 && num_patterns <= (max_patterns == 0 ? core::max_bank_patterns : max_patterns), "num_patterns", num_patterns,
            max_patterns == 0 ? fmt::format("must be in [0, {}]", core::max_bank_patterns)
                              : fmt::format("must be in [0, max_patterns = {}]", max_patterns));
    require(tokens_per_pattern >= 0 && tokens_per_pattern <= (1 << 20), "tokens_per_pattern", tokens_per_pattern,
            fmt::format("must be in [0, {}] (0 = always num_patterns)", 1 << 20));
    require(sink_tokens >= 0 && sink_tokens <= core::max_page_tokens, "sink_tokens", sink_tokens,
            fmt::format("must be in [0, {}]", core::max_page_tokens));
    if (!(gate_alpha > 0.0 && gate_alpha < 0.5)) invalid("gate_alpha", fmt::format("{}", gate_alpha), "must be in (0, 0.5)");
    require(kmeans_iterations >= 1, "kmeans_iterations", kmeans_iterations, "must be >= 1");
    if (!(kmeans_tolerance >= 0.0f) || !std::isfinite(kmeans_tolerance))
        invalid("kmeans_tolerance", fmt::format("{}", kmeans_tolerance), "must be finite and >= 0");
    if (!std::isfinite(softmax_scale) || softmax_scale < 0.0f)
        invalid("softmax_scale", fmt::format("{}", softmax_scale), "must be finite and >= 0 (0 = 1/sqrt(head_dim))");
}

std::string config::describe() const {
    return fmt::format(
        "d={} kv_heads={} q_heads={} K:{}b {} group={} V:{}b group={} R={} sink={} patterns={} (one per {} tokens, max {}, grow {}, on K "
        "{}, K channel select {}) gate={} "
        "alpha={} kmeans(iters={}, tol={}, seed={}) scale={}",
        head_dim, num_kv_heads, num_q_heads, k_bits, k_mode == k_quant_mode::per_channel ? "per-channel" : "per-token",
        k_mode == k_quant_mode::per_channel ? k_group : k_token_group_size(), v_bits, v_group_size(), residual_length, sink_tokens,
        num_patterns, tokens_per_pattern, max_patterns, grow_patterns, k_patterns, k_channel_select, gate_name(gate), gate_alpha,
        kmeans_iterations, kmeans_tolerance, seed, scale());
}

void config::set(const std::string& key, const std::string& value) {
    config c = *this;
    if (key == "head_dim")
        c.head_dim = parse_small_int(key, value);
    else if (key == "num_kv_heads")
        c.num_kv_heads = parse_small_int(key, value);
    else if (key == "num_q_heads")
        c.num_q_heads = parse_small_int(key, value);
    else if (key == "k_bits")
        c.k_bits = parse_small_int(key, value);
    else if (key == "v_bits")
        c.v_bits = parse_small_int(key, value);
    else if (key == "bits")
        c.k_bits = c.v_bits = parse_small_int(key, value);
    else if (key == "k_group")
        c.k_group = parse_small_int(key, value);
    else if (key == "k_token_group")
        c.k_token_group = parse_small_int(key, value);
    else if (key == "v_group")
        c.v_group = parse_small_int(key, value);
    else if (key == "residual_length")
        c.residual_length = parse_small_int(key, value);
    else if (key == "num_patterns")
        c.num_patterns = parse_small_int(key, value);
    else if (key == "tokens_per_pattern")
        c.tokens_per_pattern = parse_small_int(key, value);
    else if (key == "sink_tokens")
        c.sink_tokens = parse_small_int(key, value);
    else if (key == "max_patterns")
        c.max_patterns = parse_small_int(key, value);
    else if (key == "grow_patterns")
        c.grow_patterns = parse_bool(key, value);
    else if (key == "k_patterns")
        c.k_patterns = parse_bool(key, value);
    else if (key == "k_channel_select")
        c.k_channel_select = parse_bool(key, value);
    else if (key == "gate_alpha")
        c.gate_alpha = parse_double(key, value);
    else if (key == "kmeans_iterations")
        c.kmeans_iterations = parse_small_int(key, value);
    else if (key == "kmeans_tolerance")
        c.kmeans_tolerance = static_cast<float>(parse_double(key, value));
    else if (key == "seed")
        c.seed = static_cast<std::uint64_t>(parse_int(key, value));
    else if (key == "softmax_scale")
        c.softmax_scale = static_cast<float>(parse_double(key, value));
    else if (key == "gate") {
        if (value == "z_test")
            c.gate = gate_mode::z_test;
        else if (value == "always")
            c.gate = gate_mode::always;
        else if (value == "never")
            c.gate = gate_mode::never;
        else
            throw error(fmt::format("config key 'gate': '{}' is not one of z_test, always, never", value));
    } else if (key == "k_mode") {
        if (value == "per_channel")
            c.k_mode = k_quant_mode::per_channel;
        else if (value == "per_token")
            c.k_mode = k_quant_mode::per_token;
        else
            throw error(fmt::format("config key 'k_mode': '{}' is not one of per_channel, per_token", value));
    } else {
        throw error(fmt::format("unknown config key '{}'", key));
    }
    *this = c;
}

config patternkv_config(int bits) {
    config c;
    c.k_bits = c.v_bits = bits;
    return c;
}

config kivi_config(int bits) {
    config c = patternkv_config(bits);
    c.num_patterns = 0;
    c.grow_patterns = false;
    c.sink_tokens = 0;
    return c;
}

config per_token_config(int bits) {
    config c = kivi_config(bits);
    c.k_mode = k_quant_mode::per_token;
    return c;
}

std::string memory_report::describe() const {
    return fmt::format(
        "codes {} B, scales/mins {} B, pattern indices {} B, gate bits {} B, banks {} B, window {} B; "
        "total {} B for {} elements ({} quantized + {} window tokens): {:.4f} bits/element; "
        "pool pages {} of {} in use; {} B reserved",
        code_bytes, scale_min_bytes, pattern_index_bytes, gate_bytes, bank_bytes, window_bytes, total_bytes(), elements, quantized_tokens,
        window_tokens, bits_per_element(), pool_pages_used, pool_pages, reserved_bytes);
}

}  // namespace patternkv

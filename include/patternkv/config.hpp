#pragma once
/// @file config.hpp
/// Every parameter of the PatternKV method (../docs/configuration.md gives each one's origin).

#include <cstdint>
#include <string>
#include "export.hpp"

namespace patternkv {

/// How each V token decides whether it is stored as a residual (method.md section 5).
enum class gate_mode : std::uint8_t {
    z_test,  ///< residualize iff the one-sided z-test says the residual's spread is smaller (default)
    always,  ///< always residualize (the paper's "no gate" ablation)
    never,   ///< never residualize V (K is still residualized)
};

/// How K is grouped for quantization.
enum class k_quant_mode : std::uint8_t {
    per_channel,  ///< one group = one channel over k_group tokens (KIVI, PatternKV; default)
    per_token,    ///< one group = k_token_group channels of one token (LMDeploy / HF-quanto baseline)
};

/// Configuration of one layer's cache. Defaults are those of method.md.
struct PATTERNKV_API config {
    // --- model shape ---
    int head_dim = 128;    ///< d, channels per head (1..512)
    int num_kv_heads = 8;  ///< KV heads of the layer
    int num_q_heads = 32;  ///< query heads; must be a multiple of num_kv_heads (GQA)

    // --- quantizer ---
    int k_bits = 2;                                   ///< bits per K code: 2, 3, 4 or 8
    int v_bits = 2;                                   ///< bits per V code: 2, 3, 4 or 8
    k_quant_mode k_mode = k_quant_mode::per_channel;  ///< K grouping (per-channel: KIVI, PatternKV)
    int k_group = 128;                                ///< per-channel K: tokens per group (must divide residual_length)
    int k_token_group = 0;                            ///< per-token K: channels per group; 0 = head_dim; must divide head_dim
    int v_group = 0;                                  ///< channels per V group; 0 = head_dim; must divide head_dim

    // --- full-precision window ---
    int residual_length = 128;  ///< R: tokens kept unquantized; a flush quantizes R tokens

    // --- attention sink ---
    int sink_tokens = 1;  ///< S: each sequence's first S tokens are kept in fp16 for good (attention sinks:
                          ///< the first token draws much of every head's attention, so its quantization
                          ///< error reaches every step); not mined, not quantized. 0 = off (KIVI's default).
                          ///< 1 was chosen by measurement (docs/accuracy.md); at most 4096

    // --- patterns ---
    int num_patterns = 16;         ///< patterns a bank holds at most once the context is long enough (see
                                   ///< tokens_per_pattern); 0 = no patterns (exactly KIVI). The paper mines 32 from any prompt
    int tokens_per_pattern = 128;  ///< a bank holds at most one pattern per this many tokens: the prompt mines
                                   ///< min(num_patterns, ceil(mined tokens / this)), and flushes add one while the
                                   ///< bank holds fewer than ceil(quantized tokens / this). So the banks cost at most
                                   ///< 16 / this bits per element, and a bank grows with the context at the paper's
                                   ///< rate (one pattern per flush of 128 tokens). 0 = always num_patterns (the
                                   ///< paper). 128 was chosen over 256 by measurement (docs/accuracy.md, section 7)
    int max_patterns = 0;          ///< bank bound (once full, flushes stop adding patterns); 0 = num_patterns with
                                   ///< tokens_per_pattern, else twice num_patterns (the paper's growing bank).
                                   ///< Sets the pattern index width: 2 bits up to 4, 4 up to 16, else 8 (docs/configuration.md)
    bool grow_patterns = true;     ///< add the Chebyshev centre of each flushed window to the bank
    bool k_patterns = true;        ///< K aligns to patterns too (the paper); false: patterns on V only, K stored
                                   ///< exactly as KIVI stores it, with no K bank or indices
    bool k_channel_select = true;  ///< with k_patterns and per-channel K: at prefill, keep the K patterns only
                                   ///< in channels where they make the quantization error vary less from token
                                   ///< to token (zero the other bank columns); the K bank then never grows

    // --- V gate ---
    gate_mode gate = gate_mode::z_test;  ///< V gate (method.md section 5)
    double gate_alpha = 0.05;            ///< one-sided significance level of the gate (0 < alpha < 0.5)

    // --- k-means at prefill ---
    int kmeans_iterations = 30;      ///< at most this many Lloyd iterations
    float kmeans_tolerance = 1e-4f;  ///< stop when the largest centroid coordinate change is <= this
    std::uint64_t seed = 0;          ///< seeds initialisation and empty-cluster repair

    // --- attention ---
    float softmax_scale = 0.0f;  ///< tau; 0 = 1/sqrt(head_dim)

    /// Patterns a bank holds at most (max_patterns after resolving the 0 default; 0 without patterns).
    int bank_capacity() const;
    /// Channels per V group after resolving the 0 default.
    int v_group_size() const { return v_group == 0 ? head_dim : v_group; }
    /// Channels per per-token K group after resolving the 0 default.
    int k_token_group_size() const { return k_token_group == 0 ? head_dim : k_token_group; }
    /// Softmax scale after resolving the 0 default.
    float scale() const;
    /// Throws patternkv::error naming the first invalid field and its value.
    void validate() const;
    /// One-line human-readable summary.
    std::string describe() const;
    /// Sets a field by name from text ("k_bits", "4"); throws for unknown names or bad values.
    void set(const std::string& key, const std::string& value);
};

/// PatternKV defaults at the given bit width (K and V).
PATTERNKV_API config patternkv_config(int bits);
/// KIVI: no patterns, per-channel K, per-token V.
PATTERNKV_API config kivi_config(int bits);
/// Per-token K and V, no patterns (LMDeploy / HF-quanto style).
PATTERNKV_API config per_token_config(int bits);

}  // namespace patternkv

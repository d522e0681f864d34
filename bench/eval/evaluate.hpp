#pragma once
/// @file evaluate.hpp
/// The accuracy protocol: one shared fp32 prefill, then teacher-forced decoding through each
/// method's cache, all methods batched through the same weights each step.
///
/// With P prefill and N decode tokens (the text needs P + N + 1 tokens): positions 0..P-1 run as
/// a full-precision causal prefill; their post-RoPE K/V go into every method's caches. Decode step
/// j = 0..N-1 feeds token P+j at position P+j through every method, which appends its own k, v and
/// attends over its cache; the step's logits predict token P+j+1. All metrics average these N
/// predictions (tokens P+1..P+N). The prediction of token P made by the prefill is the same for
/// every method and is left out.
///
/// With C > 1 chunks the protocol runs C times on windows of P + N + 1 tokens spread evenly over
/// the text (fresh caches each time); metrics average all C * N predictions, and their standard
/// errors come from batch means over blocks of `se_block` consecutive predictions (predictions
/// next to each other are correlated, blocks far apart much less so).

#include <cstdint>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "kv_method.hpp"
#include "transformer.hpp"

namespace pkveval {

struct eval_options {
    int prefill = 1024;
    int tokens = 256;
    int chunks = 1;       ///< windows of P + N + 1 tokens spread over the text
    int se_block = 32;    ///< predictions per block for the batch-means standard errors
    bool ranges = false;  ///< print the pattern range report (pattern_ranges.hpp) after each prefill
    std::vector<std::string> methods = default_methods();
    std::vector<setting> sets;
    bool progress = true;  ///< progress lines on stderr
};

/// One row of the result table.
struct method_result {
    std::string method;
    std::string family;             ///< method name without bit widths (kv_method.hpp)
    int k_bits = 32, v_bits = 32;   ///< code widths (32 for fp32)
    std::string config;             ///< library config summary ("" for fp32)
    double bits_per_element = 0.0;  ///< stored bits per K/V element when each prediction was made, averaged over them
    double bits_at_end = 0.0;       ///< over all layers at the end of the last chunk (everything stored)
    std::uint64_t cache_bytes = 0;  ///< summed over layers at the end
    double mean_nll = 0.0;          ///< nats per predicted token
    double ppl = 0.0;               ///< exp(mean_nll)
    double kl = 0.0;                ///< mean KL(fp32 || method) of the next-token distributions, nats
    double kl_se = 0.0;             ///< standard error of kl (batch means)
    std::vector<double> kl_blocks;  ///< mean KL of each block of predictions (the batch means)
    double nll_se = 0.0;            ///< standard error of mean_nll = ln ppl (batch means)
    double top1 = 0.0;              ///< fraction of steps whose argmax equals fp32's
    double cache_seconds = 0.0;     ///< time in the method's append + attend calls
    double tokens_per_s = 0.0;      ///< N / cache_seconds
};

struct eval_report {
    std::string model, text;
    int prefill = 0, tokens = 0, chunks = 1;
    std::vector<int> chunk_offsets;  ///< first token of each chunk
    int n_layers = 0;
    int local_layers = 0, sliding_window = 0;  ///< sliding-window layers, kept exact by every method (kv_method.hpp)
    double prefill_seconds = 0.0, decode_seconds = 0.0;
    std::vector<method_result> results;  ///< results[0] is fp32, the reference
};

/// Mean and batch-means standard error of per-prediction values laid out as `chunks` runs of
/// equal length; blocks of `block` values never cross a chunk boundary (a last short block of a
/// chunk joins the one before it). SE is 0 with fewer than 2 blocks.
std::pair<double, double> mean_and_se(std::span<const double> values, int chunks, int block);

/// Means of the blocks of `block` consecutive values within each of `chunks` equal runs (a chunk's
/// last short block joins the one before it).
std::vector<double> block_means(std::span<const double> values, int chunks, int block);

/// A method's KL over KIVI's at its bits per element (kivi_kl_at), and the ratio's standard error
/// from the same interpolation done block by block on the same predictions (paired: what is hard for
/// one method is hard for all). NaNs where kivi_kl_at has no value.
std::pair<double, double> kl_over_kivi(const eval_report& r, const method_result& m);

/// KIVI's KL at `bits` per element, interpolated log-linearly between the two nearest KIVI points
/// of the report (methods named kivi-B or kivi-B-B); NaN without two KIVI points or outside their
/// range. The yardstick for comparisons at equal storage.
double kivi_kl_at(const eval_report& r, double bits);

/// Runs the protocol on `ids` (already tokenized, BOS included when the model wants it). fp32 is
/// added first when `opt.methods` lacks it, as the KL/top-1 reference. Throws eval_error when the
/// text is too short, a method is unknown or the library rejects a config.
eval_report evaluate(const transformer& tf, std::span<const int> ids, const eval_options& opt);

/// Mean NLL (nats) of tokens 1..T-1 given their prefixes, from one full-precision prefill.
double prefill_mean_nll(const transformer& tf, std::span<const int> ids);

/// llama-perplexity's protocol, for comparing the fp32 model with llama.cpp: `ids` (the whole text,
/// tokenized once) is cut into chunks of `ctx` tokens; each chunk's first token becomes `bos` (when
/// bos >= 0), the chunk runs as one fp32 prefill, and the predictions of its second half are scored
/// (tokens ctx/2+1 .. ctx-1 of the chunk). Returns each chunk's mean NLL; at most `max_chunks`.
std::vector<double> chunk_perplexity_nll(const transformer& tf, std::span<const int> ids, int ctx, int bos, int max_chunks, bool progress);

/// Greedy generation with an exact fp32 cache; `on_token` receives each new token's text.
/// Stops after `max_new` tokens or at EOS/BOS. Returns the generated ids.
std::vector<int> generate_greedy(const transformer& tf, std::span<const int> prompt, int max_new,
                                 const std::function<void(const std::string&)>& on_token);

}  // namespace pkveval

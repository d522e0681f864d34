#pragma once
/// @file user_policies.hpp
/// A pattern miner and a V gate of the user's own, given to a cache in place of the ones its config
/// selects (the PatternMiner and VGate concepts). They run on the CPU backend. The GPU backends
/// compile their kernels with the library's own policies, so a cache on a GPU refuses user policies;
/// the residual quantizer and attention on codes stay closed (the page layout, the file format and
/// the integer attention kernels are defined for the two built-in quantizers). docs/embedding.md.

#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <utility>

#include "concepts.hpp"

namespace patternkv {

/// Any PatternMiner, held by value. The cache checks what it returns: a count in [0, min(tokens,
/// bank capacity)] and finite patterns within the input bound (|x| <= 16384); anything else is an
/// error and leaves the cache as it was. The cache calls it from several threads at once (one task
/// per KV head and side), so its const members must be safe to call concurrently; so must a gate's.
class any_miner {
public:
    /// Wraps a copy of `m`.
    template <PatternMiner M>
    explicit any_miner(M m) {
        auto p = std::make_shared<const M>(std::move(m));  // one miner, shared by both calls and by copies
        mine_ = [p](std::span<const float> x, int d, int head, bool is_v, std::span<float> bank) {
            return p->mine(x, d, head, is_v, bank);
        };
        propose_ = [p](std::span<const float> w, int d, std::span<float> centre) { return p->propose(w, d, centre); };
    }
    /// PatternMiner::mine of the wrapped miner.
    int mine(std::span<const float> x, int d, int head, bool is_v, std::span<float> bank) const { return mine_(x, d, head, is_v, bank); }
    /// PatternMiner::propose of the wrapped miner.
    bool propose(std::span<const float> window, int d, std::span<float> centre) const { return propose_(window, d, centre); }

private:
    std::function<int(std::span<const float>, int, int, bool, std::span<float>)> mine_;
    std::function<bool(std::span<const float>, int, std::span<float>)> propose_;
};

/// Any VGate, held by value.
class any_gate {
public:
    /// Wraps a copy of `g`.
    template <VGate G>
    explicit any_gate(G g)
        : residualize_([g = std::move(g)](std::span<const float> v, std::span<const float> m) { return g.residualize(v, m); }) {}
    /// VGate::residualize of the wrapped gate.
    bool residualize(std::span<const float> v, std::span<const float> m) const { return residualize_(v, m); }

private:
    std::function<bool(std::span<const float>, std::span<const float>)> residualize_;
};

static_assert(PatternMiner<any_miner> && VGate<any_gate>);

/// What replaces the config's policies in a cache; an empty member keeps the config's.
/// The config still needs patterns (num_patterns > 0) and still sets the bank's capacity
/// (config::bank_capacity()) and when a flush may grow it (config::tokens_per_pattern, K channel
/// selection); the user miner decides what is mined and proposed, the user gate which V tokens
/// are stored as residuals.
struct user_policies {
    std::optional<any_miner> miner;  ///< replaces k-means (config::num_patterns, kmeans_*, grow_patterns)
    std::optional<any_gate> gate;    ///< replaces config::gate
};

}  // namespace patternkv

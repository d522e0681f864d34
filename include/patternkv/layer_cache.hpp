#pragma once
/// @file layer_cache.hpp
/// The PatternKV cache of one attention layer for a batch of sequences, on any backend.

#include <cstdint>
#include <memory>
#include <span>

#include "backend.hpp"
#include "config.hpp"
#include "memory_report.hpp"
#include "tensor_view.hpp"
#include "user_policies.hpp"
#include "export.hpp"

namespace patternkv {

struct layer_cache_state;  // implementation detail
namespace detail {
struct cache_io;      // persistence.hpp's reader and writer
struct state_access;  // the library's own tests and tools (src/layer_cache_state.hpp)
}

/// What a cache holds: sequence slots, the bound on one sequence, and the page pool they share.
///
/// A sequence's quantized history is stored in pages of residual_length tokens (every KV head of
/// them), taken from one pool as the sequence grows and given back by reset(); a sequence of T tokens
/// holds (T - sink_tokens) / residual_length pages, rounded down (the rest are fp16 rows of its own).
/// An engine serving many sequences of unknown length sizes the pool for the tokens it expects to
/// hold at once, not for slots x max_tokens. Each slot also keeps its own fp16 sink and window rows
/// and pattern banks (bounded by config::bank_capacity()), whether or not it is in use.
struct cache_capacity {
    int slots = 1;                ///< sequences held at once: indices 0 .. slots - 1 (>= 1)
    std::int64_t max_tokens = 1;  ///< tokens one sequence may hold (>= 1)
    std::int64_t pool_pages = 0;  ///< pages in the shared pool; 0 = enough for every slot to reach max_tokens
};

/// KV cache of one layer holding up to `slots` independent sequences of different lengths, each
/// with its own pattern banks, their quantized pages in one shared pool (cache_capacity). Everything
/// is allocated at construction, so `append` and `attend` never allocate.
///
/// Every operation validates its arguments first and throws patternkv::error on bad input,
/// non-finite values or exhausted capacity (a sequence at max_tokens, an empty pool); a throwing
/// call leaves the cache unchanged.
///
/// Example (one layer, one sequence):
/// @code
///   patternkv::config cfg = patternkv::patternkv_config(2);
///   cfg.head_dim = 64; cfg.num_kv_heads = 4; cfg.num_q_heads = 8;
///   patternkv::layer_cache cache(cfg, /*batch=*/1, /*max_tokens=*/4096);
///   cache.prefill(0, patternkv::view_f32(k, T, 4, 64), patternkv::view_f32(v, T, 4, 64));
///   cache.append(patternkv::view_f32(k1, 1, 4, 64), patternkv::view_f32(v1, 1, 4, 64));
///   cache.attend(patternkv::view_f32(q, 1, 8, 64), patternkv::view_f32(out, 1, 8, 64));
/// @endcode
/// An engine admits a request into a free slot with prefill(), decodes it with append() and
/// attend() over the slots in flight, and releases it with reset(), which gives its pages back:
/// @code
///   patternkv::layer_cache cache(cfg, {.slots = 256, .max_tokens = 32768, .pool_pages = 4096});
/// @endcode
/// On a GPU backend, prefill, append and attend also take views of device memory
/// (tensor_view::on_device()): such a call is enqueued on the cache's stream (set_stream) without
/// host copies or waiting, and synchronize() reports invalid values the device found in them
/// (docs/gpu-backends.md, "Device-resident use").
class PATTERNKV_API layer_cache {
public:
    /// @param cfg        validated with config::validate()
    /// @param batch      number of sequence slots (>= 1)
    /// @param max_tokens capacity per sequence in tokens (>= 1)
    /// @param where      compute backend (throws if unavailable; see backend_unavailable_reason)
    layer_cache(const config& cfg, int batch, std::int64_t max_tokens, backend where = backend::cpu);
    /// A cache of the given capacity (slots, max_tokens, a pool of pool_pages pages).
    layer_cache(const config& cfg, const cache_capacity& capacity, backend where = backend::cpu);
    /// A cache whose miner and/or V gate are the user's own (user_policies.hpp); CPU backend only
    /// (a GPU backend throws). Files saved from it load with the config's policies.
    layer_cache(const config& cfg, int batch, std::int64_t max_tokens, const user_policies& policies, backend where = backend::cpu);
    /// The same, of the given capacity.
    layer_cache(const config& cfg, const cache_capacity& capacity, const user_policies& policies, backend where = backend::cpu);
    ~layer_cache();
    /// Takes over another cache's storage (the moved-from object may only be destroyed or assigned).
    layer_cache(layer_cache&&) noexcept;
    /// Takes over another cache's storage.
    layer_cache& operator=(layer_cache&&) noexcept;
    layer_cache(const layer_cache&) = delete;
    layer_cache& operator=(const layer_cache&) = delete;

    /// Stores the prompt of sequence `seq`, which must be empty: keeps its first sink_tokens tokens
    /// in fp16 for good, mines its pattern banks (k-means) from the tokens after them, quantizes
    /// their whole pages of residual_length tokens and keeps the rest in the window.
    /// k, v: [tokens, num_kv_heads, head_dim], f32/f16/bf16, any strides; tokens may be 0.
    void prefill(int seq, const_tensor_view k, const_tensor_view v);

    /// Appends one decode token to each sequence listed in `seqs` (distinct, in any order).
    /// k, v: [seqs.size(), num_kv_heads, head_dim]. A sequence whose window is already full
    /// (residual_length tokens, seen by the previous attend) is first flushed into a new page, so
    /// after append the window holds 1..residual_length tokens and attend always sees the newest one
    /// unquantized.
    void append(std::span<const int> seqs, const_tensor_view k, const_tensor_view v);
    /// Appends one token to every sequence: k, v [batch, num_kv_heads, head_dim].
    void append(const_tensor_view k, const_tensor_view v);

    /// Decode attention for one query token per listed sequence over its whole cache
    /// (quantized history and window). q: [seqs.size(), num_q_heads, head_dim] (any dtype);
    /// out: [seqs.size(), num_q_heads, head_dim], f32. Every listed sequence must hold >= 1 token.
    void attend(std::span<const int> seqs, const_tensor_view q, tensor_view out) const;
    /// attend() for every sequence: q, out [batch, num_q_heads, head_dim].
    void attend(const_tensor_view q, tensor_view out) const;

    // Device-resident use (GPU backends; docs/gpu-backends.md).
    // prefill, append and attend take views of device memory (tensor_view::on_device()) as well:
    // every view of one call is then on the device, and the call enqueues its work on the cache's
    // stream and returns without waiting (no host copies of the tensors; `seqs` is host memory).
    // Shapes, sequence indices and capacity are checked at the call, as for host views. Values are
    // checked on the device: an element that is NaN, Inf or beyond max_abs_input is read as 0, and
    // synchronize() reports the first such element of each tensor, naming the tensor, the sequence,
    // the head and the channel (the sequence then holds that 0 in place of the value: reset() it). A device `out`
    // must be f32 with unit stride in its last dimension. Calls with host views synchronize the
    // stream before they return, as before.

    /// Sets the stream (a cudaStream_t or hipStream_t; nullptr is the default stream) that later
    /// calls enqueue their work on. The caller orders work on a new stream after work on the old
    /// one (e.g. with an event); the cache's own scratch is reused by every call. CPU backend:
    /// only nullptr.
    void set_stream(void* stream);
    /// The stream set by set_stream (nullptr: the default stream).
    void* stream() const;
    /// Waits for the cache's work on its stream, then throws patternkv::error for the first invalid
    /// element a device view held since the last synchronize() (reported once), or for an error of
    /// the device. The CPU backend has nothing to wait for.
    void synchronize() const;

    /// Reconstructed K and V of sequence `seq` as attention sees them (history dequantized plus its
    /// patterns, window as stored). k, v: [size(seq), num_kv_heads, head_dim], f32. For tests and
    /// debugging; attend() never materializes this.
    void dequantize(int seq, tensor_view k, tensor_view v) const;

    /// Forgets sequence `seq` (tokens and banks) and gives its pages back to the pool, so its slot
    /// can take a new prompt (an engine's release of a finished request).
    void reset(int seq);

    /// Tokens cached for sequence `seq` (history + window).
    std::int64_t size(int seq) const;
    /// Tokens of sequence `seq` in quantized history (the sink and the window excluded).
    std::int64_t quantized_size(int seq) const;
    /// Patterns currently in the K (v = false) or V (v = true) bank of (seq, kv head).
    int bank_size(int seq, int kv_head, bool v) const;

    /// The backend this cache runs on.
    backend where() const;
    /// Number of sequence slots.
    int batch() const;
    /// Capacity per sequence in tokens.
    std::int64_t max_tokens() const;
    /// Pages in the shared pool (cache_capacity::pool_pages, resolved).
    std::int64_t pool_pages() const;
    /// Pool pages no sequence holds.
    std::int64_t free_pages() const;
    /// The configuration the cache was built with.
    const config& cfg() const;
    /// What is stored, byte by byte, and what is reserved (see memory_report).
    memory_report memory() const;

private:
    friend struct detail::cache_io;
    friend struct detail::state_access;
    std::unique_ptr<layer_cache_state> state_;
};

}  // namespace patternkv

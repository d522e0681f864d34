#pragma once
// The backend interface behind layer_cache (internal). layer_cache validates and converts every
// input, then hands fp16 K/V and fp32 queries to its backend; the CPU reference and the GPU
// backends implement the same operations and must produce identical bits.
#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include <patternkv/backend.hpp>
#include <patternkv/tensor_view.hpp>

namespace patternkv {

struct layer_cache_state;

class cache_backend {
public:
    virtual ~cache_backend() = default;
    virtual backend kind() const = 0;
    /// Prompt of `seq` (empty before the call): k, v fp16 [H][T][d], T >= 1. Writes banks (and their
    /// sizes), pages [0, T / R) and the window; layer_cache then sets pages[seq] and window_count[seq].
    virtual void prefill(layer_cache_state& s, int seq, const std::uint16_t* k, const std::uint16_t* v, int T) = 0;
    /// One token per listed sequence: k, v fp16 [H][n][d]. Writes each row at window position
    /// window_count[seq] and flushes sequences whose window becomes full into page pages[seq]
    /// (growing bank sizes); layer_cache then advances the counters.
    virtual void append(layer_cache_state& s, std::span<const int> seqs, const std::uint16_t* k, const std::uint16_t* v) = 0;
    /// Decode attention: q [n][Hq][d] fp32 -> out [n][Hq][d] fp32.
    virtual void attend(const layer_cache_state& s, std::span<const int> seqs, const float* q, float* out) const = 0;
    /// Makes the host arrays of `s` current (device backends allocate them if needed and copy
    /// their buffers back).
    virtual void sync_to_host(layer_cache_state&) const {}
    /// Copies the host arrays of `s` to the device (after a load from a file).
    virtual void sync_from_host(const layer_cache_state&) {}

    // Device-resident calls (layer_cache.hpp): the views' data are device pointers, read and
    // written on the device; shapes, indices and capacity were checked by layer_cache. Enqueued on
    // the backend's stream, without waiting. Only backends whose device_views() is true get them.
    virtual bool device_views() const { return false; }
    /// prefill() of views k, v [T][H][d].
    virtual void prefill_device(layer_cache_state& s, int seq, const const_tensor_view& k, const const_tensor_view& v, int T);
    /// append() of views k, v [n][H][d].
    virtual void append_device(layer_cache_state& s, std::span<const int> seqs, const const_tensor_view& k, const const_tensor_view& v);
    /// attend() of view q [n][Hq][d] into f32 view out [n][Hq][d] (unit stride in the last dimension).
    virtual void attend_device(const layer_cache_state& s, std::span<const int> seqs, const const_tensor_view& q,
                               const tensor_view& out) const;
    /// The stream later calls enqueue on (nullptr: the default stream).
    virtual void set_stream(void* stream);
    virtual void* stream() const { return nullptr; }
    /// Waits for the stream; throws for an invalid element of a device view since the last call,
    /// or for a device error.
    virtual void synchronize() const {}
};

/// The CPU reference backend.
std::unique_ptr<cache_backend> make_cpu_backend();

/// A backend of the given kind for `s` (throws patternkv::error when unavailable).
std::unique_ptr<cache_backend> make_backend(backend kind, const layer_cache_state& s);

}  // namespace patternkv

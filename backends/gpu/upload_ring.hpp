#pragma once
// Per-call host data (counters, index lists, block-table changes) sent to the device from
// page-locked memory, so that the copy is asynchronous on the caller's stream: a copy from pageable
// memory may wait for the stream to drain (the driver stages it). The data goes through a ring of
// page-locked slots; a slot is written again only after the copy that last read it has finished
// (an event recorded after it), so up to `slots` uploads are in flight and the host never
// overwrites bytes a pending copy still reads. (A call captured in a CUDA graph would still not
// replay: a replay reads whatever its slot holds then.)
#include <cstddef>
#include <cstring>
#include <source_location>
#include <string>
#include <utility>
#include <vector>

#include "runtime.hpp"

namespace patternkv::PKV_GPU_NS::gpu {

class upload_ring {
public:
    upload_ring() = default;
    /// `slots` page-locked slots of `bytes` each.
    upload_ring(std::size_t bytes, int slots, std::source_location where = std::source_location::current()) : bytes_(bytes) {
        slots_.reserve(static_cast<std::size_t>(slots));
        for (int i = 0; i < slots; ++i) {
            slot s{};
            check(raw_host_malloc(&s.host, bytes), "page-locked host allocation", where);
            if (const status e = event_create(&s.done); e != success) {
                (void)raw_host_free(s.host);
                check(e, "event creation", where);
            }
            slots_.push_back(s);
        }
    }
    upload_ring(upload_ring&& o) noexcept
        : slots_(std::exchange(o.slots_, {})), bytes_(std::exchange(o.bytes_, 0)), next_(std::exchange(o.next_, 0)) {}
    upload_ring& operator=(upload_ring&& o) noexcept {
        if (this != &o) {
            release();
            slots_ = std::exchange(o.slots_, {});
            bytes_ = std::exchange(o.bytes_, 0);
            next_ = std::exchange(o.next_, 0);
        }
        return *this;
    }
    upload_ring(const upload_ring&) = delete;
    upload_ring& operator=(const upload_ring&) = delete;
    ~upload_ring() { release(); }

    /// Copies n elements from host src (which may be reused at once) to device dst, in order on
    /// `stream`, through the next slot. n * sizeof(T) must fit a slot.
    template <class T>
    void send(stream_t stream, T* dst, const T* src, std::size_t n, std::source_location where = std::source_location::current()) {
        if (n == 0) return;
        if (n * sizeof(T) > bytes_)
            throw error(std::string("patternkv ") + api_name + " backend: an upload of " + std::to_string(n * sizeof(T)) +
                        " bytes exceeds its ring's " + std::to_string(bytes_) + "-byte slots");
        slot& s = slots_[next_];
        next_ = (next_ + 1) % slots_.size();
        if (s.used) check(event_wait(s.done), "wait for an upload slot", where);
        std::memcpy(s.host, src, n * sizeof(T));
        copy_to_device(stream, dst, static_cast<const T*>(s.host), n, where);
        check(event_record(s.done, stream), "record an upload", where);
        s.used = true;
    }

private:
    struct slot {
        void* host;
        event done;
        bool used;
    };
    // Never throws from a destructor: a pending copy still reading a slot is waited for first.
    void release() noexcept {
        for (slot& s : slots_) {
            if (s.used) (void)event_wait(s.done);
            (void)event_destroy(s.done);
            (void)raw_host_free(s.host);
        }
        slots_.clear();
    }

    std::vector<slot> slots_;
    std::size_t bytes_ = 0;
    std::size_t next_ = 0;
};

}  // namespace patternkv::PKV_GPU_NS::gpu

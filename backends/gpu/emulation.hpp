#pragma once
// A host emulation of the few CUDA/HIP device-language features backends/gpu/ uses, so the GPU
// kernels and backend class can be compiled by g++ and run on the CPU (tests/test_differential.cpp,
// --backend emulated). It checks the thread mapping and index maps of every kernel against the CPU
// reference on machines without a GPU; it does not check device compilers' arithmetic (fma, IEEE
// division and sqrt, denormals), which only a device run does.
//
// Blocks run one after another, in an order that varies from launch to launch
// (gpu::emulated_order). A kernel launched with gpu::launch runs its threads one after another too,
// in a varying order (it must not use barriers). gpu::launch_with_barriers runs each block's
// threads as fibers, one at a time (pkv_emulated_block): a thread runs until it reaches a barrier
// (__syncthreads, or a warp's rendezvous in block_primitives.hpp's folds) or ends, and the next to
// run is drawn at random from those that may go on. So the threads of a phase between two barriers
// run in a different order in every launch, and a kernel that reads what another thread wrote in the
// same phase (a missing barrier) gets different bits from one launch to the next, which the
// differential test sees. __shared__ becomes static storage (per block: blocks never overlap);
// dynamic shared memory is a per-block buffer, poisoned like device allocations. Launches past the
// device limits throw, as a device refuses them.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <ucontext.h>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __shared__ static
#define __launch_bounds__(n)

struct pkv_emulated_dim3 {
    unsigned x = 0, y = 0, z = 0;
};
inline thread_local pkv_emulated_dim3 threadIdx, blockIdx, blockDim;

/// The threads of one block of a launch with barriers, as fibers (ucontext) run one at a time by
/// the launching thread: a fiber runs until it reaches a barrier or ends, then the scheduler draws
/// the next from those that may go on. Barrier 0 is the block's; barrier 1 + w is warp w's (its 32
/// threads, fewer in a last partial warp).
class pkv_emulated_block {
public:
    static constexpr unsigned warp = 32;
    static constexpr std::size_t stack_bytes = 256 * 1024;

    pkv_emulated_block(unsigned threads, std::uint64_t seed)
        : threads_(threads),
          waiting_(threads, runnable),
          arrived_(1 + (threads + warp - 1) / warp, 0),
          fibers_(threads),
          exchange_(2 * static_cast<std::size_t>(threads) * exchange_words),
          exchanges_(threads, 0),
          pending_(threads),
          gen_(seed) {}

    /// Runs body() as each thread of the block (threadIdx set) until every thread has ended.
    template <class Body>
    void run(Body& body) {
        static thread_local std::vector<std::unique_ptr<char[]>> stacks;  // reused by every block of this launching thread
        while (stacks.size() < threads_) stacks.push_back(std::make_unique<char[]>(stack_bytes));
        body_ = [](void* b) { (*static_cast<Body*>(b))(); };
        body_arg_ = &body;
        for (unsigned t = 0; t < threads_; ++t) {
            getcontext(&fibers_[t]);
            fibers_[t].uc_stack.ss_sp = stacks[t].get();
            fibers_[t].uc_stack.ss_size = stack_bytes;
            fibers_[t].uc_link = &scheduler_;
            makecontext(&fibers_[t], &fiber_main, 0);
            ready_.push_back(t);
        }
        pkv_emulated_block* const outer = running_block;
        running_block = this;
        while (finished_ < threads_) {
            if (ready_.empty()) deadlock();
            running_ = draw();
            threadIdx = {running_, 0, 0};
            swapcontext(&scheduler_, &fibers_[running_]);
        }
        running_block = outer;
    }

    /// Thread t reaches barrier b; returns when every member has and t is drawn to run again.
    void arrive(unsigned t, unsigned b) {
        waiting_[t] = static_cast<int>(b);
        if (++arrived_[b] == members(b)) {
            arrived_[b] = 0;
            for (unsigned u = first(b); u < first(b) + members(b); ++u) {
                waiting_[u] = runnable;
                ready_.push_back(u);
            }
        }
        swapcontext(&fibers_[t], &scheduler_);
    }

    /// Words a thread may post to its warp at once (emulated shuffles and matrix products).
    static constexpr unsigned exchange_words = 8;

    /// Warp-collective: thread t posts n <= exchange_words words, its warp (32 threads) meets, and t
    /// copies the words every lane l posted to lanes[l * n ...]. Exchanges alternate between two
    /// slots per thread, so one meeting suffices: a lane posts exchange i + 2 only after exchange
    /// i + 1's meeting, which every lane reaches after reading exchange i.
    void warp_exchange(unsigned t, const std::uint32_t* words, unsigned n, std::uint32_t* lanes) {
        const unsigned base = t - t % warp, barrier = 1 + t / warp, slot = exchanges_[t]++ % 2;
        const auto at = [&](unsigned u) { return &exchange_[(2 * u + slot) * exchange_words]; };
        std::memcpy(at(t), words, n * sizeof *words);
        arrive(t, barrier);
        for (unsigned l = 0; l < warp; ++l) std::memcpy(lanes + l * n, at(base + l), n * sizeof *words);
    }

    /// A copy to shared memory a thread issued (gpu::copy_async) and has not waited for.
    struct pending_copy {
        void* dst;
        const void* src;
        std::size_t bytes;  ///< 0 once landed
    };

    /// Thread t issues a copy into its open group.
    void issue_copy(unsigned t, const pending_copy& c) { pending_[t].copies.push_back(c); }
    /// Thread t closes its open group (gpu::stage_async). A device lands the group at some time
    /// between its issue and the wait that covers it, so the emulation takes either end at random:
    /// both a read before the wait and a copy issued into a buffer other threads still read give
    /// other bits.
    void commit_copies(unsigned t) {
        copy_queue& q = pending_[t];
        const std::size_t begin = q.ends.empty() ? 0 : q.ends.back();
        q.ends.push_back(q.copies.size());
        if (std::bernoulli_distribution(0.5)(gen_)) land(q, begin, q.copies.size());
    }
    /// Thread t waits until at most its newest `in_flight` groups have not landed (gpu::wait_staged).
    void wait_copies(unsigned t, std::size_t in_flight) {
        copy_queue& q = pending_[t];
        if (q.ends.size() <= in_flight) return;
        const std::size_t groups = q.ends.size() - in_flight, end = q.ends[groups - 1];
        land(q, 0, end);
        q.copies.erase(q.copies.begin(), q.copies.begin() + static_cast<std::ptrdiff_t>(end));
        q.ends.erase(q.ends.begin(), q.ends.begin() + static_cast<std::ptrdiff_t>(groups));
        for (std::size_t& e : q.ends) e -= end;
    }

    static inline thread_local pkv_emulated_block* running_block = nullptr;

private:
    static constexpr int runnable = -1, finished = -2;

    /// A thread's copies not waited for, oldest first (flat, so a block allocates once per thread),
    /// and where each of its groups ends in them.
    struct copy_queue {
        std::vector<pending_copy> copies;
        std::vector<std::size_t> ends;
    };
    static void land(copy_queue& q, std::size_t begin, std::size_t end) {
        for (std::size_t i = begin; i < end; ++i) {
            pending_copy& c = q.copies[i];
            std::memcpy(c.dst, c.src, c.bytes);
            c.bytes = 0;
        }
    }

    static void fiber_main() {
        pkv_emulated_block& b = *running_block;
        b.body_(b.body_arg_);
        b.waiting_[b.running_] = finished;
        ++b.finished_;
    }  // returns to the scheduler (uc_link)

    unsigned members(unsigned b) const {
        if (b == 0) return threads_;
        const unsigned f = first(b);
        return threads_ - f < warp ? threads_ - f : warp;
    }
    static unsigned first(unsigned b) { return b == 0 ? 0 : (b - 1) * warp; }
    unsigned draw() {
        const std::size_t i = std::uniform_int_distribution<std::size_t>(0, ready_.size() - 1)(gen_);
        const unsigned t = ready_[i];
        ready_[i] = ready_.back();
        ready_.pop_back();
        return t;
    }
    // A block where no thread can go on is a deadlock on a device (a barrier some thread never
    // reaches): a bug of the kernel, reported and fatal as a device hang would be.
    [[noreturn]] void deadlock() const {
        std::fprintf(stderr, "emulated GPU: deadlock in block %u: %u of %u threads ended, the others wait at barriers\n", blockIdx.x,
                     finished_, threads_);
        std::abort();
    }

    unsigned threads_, finished_ = 0, running_ = 0;
    std::vector<int> waiting_;  ///< per thread: runnable, finished, or the barrier it waits at
    std::vector<unsigned> arrived_;
    std::vector<unsigned> ready_;  ///< threads that may run, not running
    std::vector<ucontext_t> fibers_;
    ucontext_t scheduler_{};
    void (*body_)(void*) = nullptr;
    void* body_arg_ = nullptr;
    std::vector<std::uint32_t> exchange_;  ///< two slots of exchange_words per thread (warp_exchange)
    std::vector<unsigned> exchanges_;      ///< per thread: warp exchanges so far
    std::vector<copy_queue> pending_;      ///< per thread: asynchronous copies (gpu::stage_async)
    std::mt19937_64 gen_;
};

inline thread_local unsigned char* pkv_emulated_dynamic_shared = nullptr;

inline void __syncthreads() {
    if (pkv_emulated_block::running_block == nullptr) std::abort();  // a barrier in a kernel launched with gpu::launch
    pkv_emulated_block::running_block->arrive(threadIdx.x, 0);
}

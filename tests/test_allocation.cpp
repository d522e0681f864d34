// layer_cache.hpp and docs/embedding.md promise that append and attend never allocate once a cache
// exists (storage is reserved at construction; scratch grows only on first use per thread). This test
// counts every global operator new while decode steps run, flushes included.
#include <atomic>
#include <cstdlib>
#include <new>
#include <vector>

#include <doctest/doctest.h>

#include "support.hpp"

namespace {
std::atomic<long> allocations{0};
std::atomic<bool> counting{false};
}  // namespace

void* operator new(std::size_t n) {
    if (counting.load(std::memory_order_relaxed)) allocations.fetch_add(1, std::memory_order_relaxed);
    if (void* p = std::malloc(n == 0 ? 1 : n)) return p;
    throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }

namespace {

// Runs `steps` decode steps (append + attend for both sequences) starting at token `from`.
void decode(patternkv::layer_cache& cache, const std::vector<float>& k, const std::vector<float>& v, const std::vector<float>& q,
            std::vector<float>& out, int from, int steps, int H, int Hq, int d) {
    for (int t = from; t < from + steps; ++t) {
        cache.append(patternkv::view_f32(k.data() + static_cast<std::size_t>(t) * 2 * H * d, 2, H, d),
                     patternkv::view_f32(v.data() + static_cast<std::size_t>(t) * 2 * H * d, 2, H, d));
        cache.attend(patternkv::view_f32(q.data(), 2, Hq, d), patternkv::view_f32(out.data(), 2, Hq, d));
    }
}

}  // namespace

TEST_CASE("append and attend never allocate after warm-up, flushes included") {
    const int H = 2, Hq = 4, d = 64, R = 32;
    for (auto base : {patternkv::patternkv_config(2), patternkv::kivi_config(4), patternkv::per_token_config(3)}) {
        patternkv::config c = pkv_test::with_shape(base, H, d, Hq, R);
        patternkv::layer_cache cache(c, 2, 1024);
        const int total = 600;
        const auto k = pkv_test::synthetic_kv(5, 2 * total, H, d, true), v = pkv_test::synthetic_kv(6, 2 * total, H, d, false);
        const auto q = pkv_test::normal_floats(7, static_cast<std::size_t>(2) * Hq * d);
        std::vector<float> out(q.size());
        for (int seq = 0; seq < 2; ++seq)
            cache.prefill(seq, patternkv::view_f32(k.data() + static_cast<std::size_t>(seq) * 100 * H * d, 100, H, d),
                          patternkv::view_f32(v.data() + static_cast<std::size_t>(seq) * 100 * H * d, 100, H, d));
        decode(cache, k, v, q, out, 100, 3 * R, H, Hq, d);  // warm-up: every thread's scratch and the flush path
        allocations = 0;
        counting = true;
        decode(cache, k, v, q, out, 100 + 3 * R, 6 * R, H, Hq, d);  // 6 more flushes per sequence
        counting = false;
        INFO(c.describe());
        CHECK(allocations.load() == 0);
    }
}

TEST_CASE("the allocation counter sees allocations (the check above can fail)") {
    allocations = 0;
    counting = true;
    auto* p = new std::vector<int>(100);
    counting = false;
    delete p;
    CHECK(allocations.load() >= 1);
}

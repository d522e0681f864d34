// Identical bits for 1, 2 and 8 oneTBB threads over prefill plus 300 decode steps.
#include <tbb/global_control.h>
#include <tbb/task_arena.h>

#include <cstring>

#include "state_snapshot.hpp"
#include "support.hpp"

namespace {

struct run_result {
    std::vector<std::uint8_t> state;
    std::vector<float> outputs;  // attention outputs of every step
};

run_result run_in_arena(const patternkv::config& c, int batch);

// Runs in an arena of exactly `threads` threads (global_control lifts the hardware cap of 2 cores).
run_result run(int threads, const patternkv::config& c, int batch) {
    tbb::global_control limit(tbb::global_control::max_allowed_parallelism, static_cast<std::size_t>(threads));
    tbb::task_arena arena(threads);
    return arena.execute([&] { return run_in_arena(c, batch); });
}

run_result run_in_arena(const patternkv::config& c, int batch) {
    const int H = c.num_kv_heads, d = c.head_dim, Hq = c.num_q_heads, steps = 300;
    patternkv::layer_cache cache(c, batch, 1024);
    const int prompts[] = {300, 128, 77, 5};
    std::vector<std::vector<float>> ks, vs;
    for (int i = 0; i < batch; ++i) {
        ks.push_back(pkv_test::synthetic_kv(100 + i, prompts[i] + steps, H, d, true));
        vs.push_back(pkv_test::synthetic_kv(200 + i, prompts[i] + steps, H, d, false));
        cache.prefill(i, patternkv::view_f32(ks[i].data(), prompts[i], H, d), patternkv::view_f32(vs[i].data(), prompts[i], H, d));
    }
    run_result r;
    std::vector<float> k(static_cast<std::size_t>(batch) * H * d), v(k.size()), out(static_cast<std::size_t>(batch) * Hq * d);
    for (int step = 0; step < steps; ++step) {
        for (int i = 0; i < batch; ++i) {
            const std::size_t t = static_cast<std::size_t>(prompts[i] + step);
            std::memcpy(k.data() + i * H * d, ks[i].data() + t * H * d, sizeof(float) * H * d);
            std::memcpy(v.data() + i * H * d, vs[i].data() + t * H * d, sizeof(float) * H * d);
        }
        cache.append(patternkv::view_f32(k.data(), batch, H, d), patternkv::view_f32(v.data(), batch, H, d));
        const auto q = pkv_test::normal_floats(1000 + step, out.size());
        cache.attend(patternkv::view_f32(q.data(), batch, Hq, d), patternkv::view_f32(out.data(), batch, Hq, d));
        r.outputs.insert(r.outputs.end(), out.begin(), out.end());
    }
    r.state = pkv_test::snapshot(cache);
    return r;
}

void check_thread_counts(const patternkv::config& c, int batch) {
    const run_result one = run(1, c, batch);
    for (int threads : {2, 8}) {
        const run_result other = run(threads, c, batch);
        INFO(threads << " threads vs 1: " << c.describe());
        REQUIRE(one.state.size() == other.state.size());
        CHECK(std::memcmp(one.state.data(), other.state.data(), one.state.size()) == 0);
        REQUIRE(one.outputs.size() == other.outputs.size());
        CHECK(std::memcmp(one.outputs.data(), other.outputs.data(), sizeof(float) * one.outputs.size()) == 0);
    }
}

}  // namespace

TEST_CASE("PatternKV-2, head_dim 64, GQA 4, batch of 4 different lengths: identical bits for 1, 2, 8 threads") {
    patternkv::config c = patternkv::patternkv_config(2);
    c.head_dim = 64;
    c.num_kv_heads = 4;
    c.num_q_heads = 16;
    c.residual_length = c.k_group = 64;  // 300 steps = several flushes per sequence
    check_thread_counts(c, 4);
}

TEST_CASE("KIVI-4 and 3-bit per-token K, head_dim 128: identical bits for 1, 2, 8 threads") {
    patternkv::config c = patternkv::kivi_config(4);
    c.head_dim = 128;
    c.num_kv_heads = 2;
    c.num_q_heads = 4;
    check_thread_counts(c, 2);
    patternkv::config p = patternkv::per_token_config(3);
    p.head_dim = 128;
    p.num_kv_heads = 2;
    p.num_q_heads = 2;
    p.num_patterns = 16;
    check_thread_counts(p, 2);
}

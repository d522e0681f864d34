// The shared page pool (issue 11): sequences admitted and released at run time share one pool of
// pages through their block tables, and nothing of one sequence reaches another.
#include <algorithm>
#include <cstring>
#include <random>
#include <span>
#include <vector>

#include "state_snapshot.hpp"
#include "support.hpp"

namespace {

using patternkv::cache_capacity;
using patternkv::layer_cache;
using patternkv::view_f32;

constexpr int H = 2, d = 32, Hq = 4, R = 16;

patternkv::config pool_config(const patternkv::config& method) { return pkv_test::with_shape(method, H, d, Hq, R); }

// One request of the engine test: a prompt, then decode steps, with inputs seeded by its id.
struct request {
    int id = 0, prompt = 0, steps = 0, sink = 0;
    int slot = -1, done = 0;                  // while admitted: its slot and the steps it has decoded
    std::vector<std::vector<float>> outputs;  // attention after the prompt and after every step
    std::vector<float> k, v;                  // while admitted: its K and V rows

    std::vector<float> rows(bool keys) const { return pkv_test::synthetic_kv(1000u * id + keys, prompt + steps, H, d, keys); }
    std::vector<float> query(int step) const { return pkv_test::normal_floats(7000000u + 1000u * id + step, Hq * d); }
    int pages() const { return (prompt + steps - sink - 1) / R; }  // at its end (steps >= 1: its window keeps >= 1 row)
};

std::vector<float> attend_one(const layer_cache& cache, int slot, const std::vector<float>& q) {
    std::vector<float> out(Hq * d);
    const int seqs[] = {slot};
    cache.attend(seqs, view_f32(q.data(), 1, Hq, d), view_f32(out.data(), 1, Hq, d));
    return out;
}

// The request alone in a cache of its own, every output as attend() gives it.
std::vector<std::vector<float>> run_alone(const patternkv::config& c, const request& r, std::int64_t max_tokens) {
    layer_cache cache(c, 1, max_tokens);
    const auto k = r.rows(true), v = r.rows(false);
    const std::size_t row = H * d;
    cache.prefill(0, view_f32(k.data(), r.prompt, H, d), view_f32(v.data(), r.prompt, H, d));
    std::vector<std::vector<float>> out;
    if (r.prompt > 0) out.push_back(attend_one(cache, 0, r.query(0)));
    for (int t = 0; t < r.steps; ++t) {
        const std::size_t at = static_cast<std::size_t>(r.prompt + t) * row;
        cache.append(view_f32(k.data() + at, 1, H, d), view_f32(v.data() + at, 1, H, d));
        out.push_back(attend_one(cache, 0, r.query(t + 1)));
    }
    return out;
}

bool same_bits(const std::vector<std::vector<float>>& a, const std::vector<std::vector<float>>& b) {
    if (a.size() != b.size()) return false;
    for (std::size_t i = 0; i < a.size(); ++i)
        if (a[i].size() != b[i].size() || std::memcmp(a[i].data(), b[i].data(), a[i].size() * sizeof(float)) != 0) return false;
    return true;
}

// An engine's loop: 64 requests of random lengths through `slots` slots and a pool of `pool` pages;
// a request is admitted when a slot is free and the pool can hold every page it will need next to the
// requests in flight, decodes one token per step with the others (one append and one attend for all,
// in a shuffled order), and is released (reset) when done.
void run_engine(const patternkv::config& c, int slots, std::int64_t pool, std::int64_t max_tokens, std::uint64_t seed) {
    std::mt19937_64 gen(seed);
    std::vector<request> reqs(64);
    for (int i = 0; i < 64; ++i) {
        reqs[i].id = i;
        reqs[i].sink = c.sink_tokens;
        reqs[i].prompt = static_cast<int>(gen() % 200);
        reqs[i].steps = 1 + static_cast<int>(gen() % (max_tokens - reqs[i].prompt));
    }
    layer_cache cache(c, cache_capacity{slots, max_tokens, pool});
    const std::int64_t all_pages = static_cast<std::int64_t>((max_tokens + R - 1) / R) * 64;
    REQUIRE(cache.pool_pages() == pool);
    REQUIRE(pool < all_pages);  // the point: smaller than 64 x max_tokens

    std::vector<int> waiting(64), active, free_slots;
    for (int i = 0; i < 64; ++i) waiting[i] = 63 - i;
    for (int s = slots - 1; s >= 0; --s) free_slots.push_back(s);
    std::int64_t promised = 0;  // pages the requests in flight will hold at their end
    int most_live = 0, steps = 0;
    std::uint64_t most_pages = 0;
    while (!waiting.empty() || !active.empty()) {
        // admission
        while (!waiting.empty() && !free_slots.empty() && promised + reqs[waiting.back()].pages() <= pool) {
            request& r = reqs[waiting.back()];
            waiting.pop_back();
            r.slot = free_slots.back();
            free_slots.pop_back();
            promised += r.pages();
            REQUIRE(cache.size(r.slot) == 0);
            r.k = r.rows(true);
            r.v = r.rows(false);
            cache.prefill(r.slot, view_f32(r.k.data(), r.prompt, H, d), view_f32(r.v.data(), r.prompt, H, d));
            if (r.prompt > 0) r.outputs.push_back(attend_one(cache, r.slot, r.query(0)));
            active.push_back(r.id);
        }
        REQUIRE_FALSE(active.empty());  // every request fits the pool alone
        most_live = std::max(most_live, static_cast<int>(active.size()));
        // one decode step of every request in flight
        std::shuffle(active.begin(), active.end(), gen);
        std::vector<int> seqs;
        std::vector<float> k, v, q;
        for (const int id : active) {
            const request& r = reqs[id];
            const auto rq = r.query(r.done + 1);
            const std::size_t at = static_cast<std::size_t>(r.prompt + r.done) * H * d;
            seqs.push_back(r.slot);
            k.insert(k.end(), r.k.begin() + at, r.k.begin() + at + H * d);
            v.insert(v.end(), r.v.begin() + at, r.v.begin() + at + H * d);
            q.insert(q.end(), rq.begin(), rq.end());
        }
        const auto n = static_cast<std::int64_t>(seqs.size());
        cache.append(seqs, view_f32(k.data(), n, H, d), view_f32(v.data(), n, H, d));
        std::vector<float> out(q.size());
        cache.attend(seqs, view_f32(q.data(), n, Hq, d), view_f32(out.data(), n, Hq, d));
        ++steps;
        most_pages = std::max(most_pages, cache.memory().pool_pages_used);
        REQUIRE(cache.memory().pool_pages_used + static_cast<std::uint64_t>(cache.free_pages()) == static_cast<std::uint64_t>(pool));
        // release
        std::vector<int> still;
        for (std::size_t j = 0; j < active.size(); ++j) {
            request& r = reqs[active[j]];
            r.outputs.emplace_back(out.begin() + static_cast<std::ptrdiff_t>(j * Hq * d),
                                   out.begin() + static_cast<std::ptrdiff_t>((j + 1) * Hq * d));
            if (++r.done < r.steps) {
                still.push_back(r.id);
                continue;
            }
            CHECK(cache.quantized_size(r.slot) == static_cast<std::int64_t>(r.pages()) * R);
            cache.reset(r.slot);
            r.k.clear();
            r.v.clear();
            free_slots.push_back(r.slot);
            promised -= r.pages();
        }
        active = still;
    }
    MESSAGE(fmt::format("{} requests, {} slots, pool {} of {} pages: {} steps, up to {} live, up to {} pages in use", reqs.size(), slots,
                        pool, all_pages, steps, most_live, most_pages));
    CHECK(most_live >= 8);                     // sequences really shared the pool
    CHECK(cache.free_pages() == pool);         // no page leaked
    CHECK(cache.memory().total_bytes() == 0);  // nothing live is left
    for (const request& r : reqs) CHECK_MESSAGE(same_bits(r.outputs, run_alone(c, r, max_tokens)), "request " << r.id);
}

}  // namespace

TEST_CASE("an engine admits and releases 64 sequences through a small pool; each gives the bits it gives alone") {
    SUBCASE("PatternKV-2") { run_engine(pool_config(patternkv::patternkv_config(2)), 64, 150, 400, 1); }
    SUBCASE("PatternKV-3, 16 slots") { run_engine(pool_config(patternkv::patternkv_config(3)), 16, 120, 400, 2); }
    SUBCASE("KIVI-2") { run_engine(pool_config(patternkv::kivi_config(2)), 64, 150, 400, 3); }
}

TEST_CASE("an exhausted pool is a clear error that changes nothing") {
    const patternkv::config c = pool_config(patternkv::patternkv_config(2));
    layer_cache cache(c, cache_capacity{3, 200, 4});
    const auto k = pkv_test::synthetic_kv(1, 200, H, d, true), v = pkv_test::synthetic_kv(2, 200, H, d, false);
    cache.prefill(0, view_f32(k.data(), 3 * R + 1, H, d), view_f32(v.data(), 3 * R + 1, H, d));  // 3 pages
    CHECK(cache.free_pages() == 1);
    const auto expect_exhausted = [&](auto op) {
        const auto before = pkv_test::snapshot(cache);
        try {
            op();
            FAIL("no error thrown");
        } catch (const patternkv::error& e) {
            INFO(e.what());
            CHECK(std::string(e.what()).find("page pool is exhausted") != std::string::npos);
        }
        CHECK(pkv_test::snapshot(cache) == before);
    };
    // a prompt of 2 pages into a pool with 1 free
    expect_exhausted([&] { cache.prefill(1, view_f32(k.data(), 2 * R + 1, H, d), view_f32(v.data(), 2 * R + 1, H, d)); });
    // two full windows that flush at once, one page free
    std::vector<float> kk(2 * H * d, 0.5f), vv(2 * H * d, 0.25f);
    const auto append = [&](std::span<const int> seqs) {
        const auto n = static_cast<std::int64_t>(seqs.size());
        cache.append(seqs, view_f32(kk.data(), n, H, d), view_f32(vv.data(), n, H, d));
    };
    const int both[] = {0, 1};
    cache.prefill(1, view_f32(k.data(), 1, H, d), view_f32(v.data(), 1, H, d));  // the sink row only
    for (int t = 0; t < R; ++t) append(both);
    REQUIRE(cache.free_pages() == 1);
    expect_exhausted([&] { append(both); });
    // releasing a sequence makes room
    cache.prefill(2, view_f32(k.data(), R + 1, H, d), view_f32(v.data(), R + 1, H, d));  // the last page
    CHECK(cache.free_pages() == 0);
    expect_exhausted([&] { append(both); });
    cache.reset(2);
    const int first[] = {1}, second[] = {0};
    append(first);  // flushes into the page sequence 2 gave back
    CHECK(cache.free_pages() == 0);
    CHECK(cache.quantized_size(1) == R);
    expect_exhausted([&] { append(second); });
    cache.reset(1);
    append(second);
    CHECK(cache.quantized_size(0) == 4 * R);
    CHECK(cache.free_pages() == 0);
}

TEST_CASE("memory() reports live and reserved bytes; a pool reserves what it is sized for") {
    const patternkv::config c = pool_config(patternkv::patternkv_config(2));
    layer_cache full(c, 32, 4096), pooled(c, cache_capacity{32, 4096, 64});
    const auto a = full.memory(), b = pooled.memory();
    CHECK(a.pool_pages == 32u * 256u);
    CHECK(b.pool_pages == 64u);
    CHECK(a.total_bytes() == 0);
    CHECK(b.pool_pages_used == 0);
    CHECK(b.reserved_bytes < a.reserved_bytes / 10);
    const auto k = pkv_test::synthetic_kv(1, 300, H, d, true), v = pkv_test::synthetic_kv(2, 300, H, d, false);
    for (layer_cache* cache : {&full, &pooled}) cache->prefill(5, view_f32(k.data(), 300, H, d), view_f32(v.data(), 300, H, d));
    const auto a2 = full.memory(), b2 = pooled.memory();
    CHECK(b2.pool_pages_used == 299u / R);
    CHECK(a2.total_bytes() == b2.total_bytes());  // live bytes do not depend on the pool
    CHECK(a2.reserved_bytes == a.reserved_bytes);
    MESSAGE(b2.describe());
}

TEST_CASE("bad pool sizes are refused by name") {
    const patternkv::config c = pool_config(patternkv::patternkv_config(2));
    for (const std::int64_t pages : {std::int64_t{-1}, std::int64_t{1} << 31}) {
        try {
            layer_cache cache(c, cache_capacity{2, 100, pages});
            FAIL("accepted pool_pages = " << pages);
        } catch (const patternkv::error& e) {
            CHECK(std::string(e.what()).find("pool of") != std::string::npos);
        }
    }
}

TEST_CASE("a file saved from a pool with scattered pages loads into a smaller pool, bit for bit") {
    const patternkv::config c = pool_config(patternkv::patternkv_config(3));
    layer_cache cache(c, cache_capacity{3, 300, 40});
    const auto k = pkv_test::synthetic_kv(5, 300, H, d, true), v = pkv_test::synthetic_kv(6, 300, H, d, false);
    // sequence 1's pages land between those of sequence 0 after a release
    cache.prefill(0, view_f32(k.data(), 100, H, d), view_f32(v.data(), 100, H, d));
    cache.prefill(2, view_f32(k.data(), 50, H, d), view_f32(v.data(), 50, H, d));
    cache.reset(0);
    cache.prefill(1, view_f32(k.data(), 200, H, d), view_f32(v.data(), 200, H, d));
    const auto bytes = patternkv::serialize_layer(cache);
    patternkv::load_options o;
    o.pool_pages = 15;
    layer_cache loaded = patternkv::deserialize_layer(bytes, o);
    CHECK(loaded.pool_pages() == 15);
    CHECK(loaded.free_pages() == 15 - (199 / R + 49 / R));
    CHECK(patternkv::serialize_layer(loaded) == bytes);
    const auto q = pkv_test::normal_floats(9, 2 * Hq * d);
    const int seqs[] = {1, 2};
    std::vector<float> a(q.size()), b(q.size());
    cache.attend(seqs, view_f32(q.data(), 2, Hq, d), view_f32(a.data(), 2, Hq, d));
    loaded.attend(seqs, view_f32(q.data(), 2, Hq, d), view_f32(b.data(), 2, Hq, d));
    CHECK(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
    o.pool_pages = 14;
    try {
        (void)patternkv::deserialize_layer(bytes, o);
        FAIL("a pool too small for the file was accepted");
    } catch (const patternkv::error& e) {
        CHECK(std::string(e.what()).find("load_options::pool_pages = 14") != std::string::npos);
    }
}

// Backend queries: the CPU is always there; a GPU backend either works or says why not.
#include "support.hpp"

TEST_CASE("the CPU backend is always available and is the default") {
    CHECK(patternkv::backend_available(patternkv::backend::cpu));
    patternkv::config c = patternkv::kivi_config(2);
    c.head_dim = 8;
    c.num_kv_heads = c.num_q_heads = 1;
    patternkv::layer_cache cache(c, 1, 16);
    CHECK(cache.where() == patternkv::backend::cpu);
    CHECK(std::string(patternkv::backend_name(patternkv::backend::cpu)) == "cpu");
}

TEST_CASE("an unavailable GPU backend says why, and constructing a cache on it throws that reason") {
    patternkv::config c = patternkv::kivi_config(2);
    c.head_dim = 8;
    c.num_kv_heads = c.num_q_heads = 1;
    for (auto b : {patternkv::backend::cuda, patternkv::backend::hip}) {
        const std::string why = patternkv::backend_unavailable_reason(b);
        MESSAGE(patternkv::backend_name(b) << ": " << (why.empty() ? "available" : why));
        if (why.empty()) {
            patternkv::layer_cache cache(c, 1, 16, b);
            CHECK(cache.where() == b);
        } else {
            CHECK_THROWS_WITH_AS(patternkv::layer_cache(c, 1, 16, b), doctest::Contains(why.c_str()), patternkv::error);
        }
    }
}

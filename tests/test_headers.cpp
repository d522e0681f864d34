// The umbrella header compiles on its own and names the public API (self-containment test).
#include <patternkv/patternkv.hpp>

#include <doctest/doctest.h>

TEST_CASE("umbrella header exposes the API and version") {
    static_assert(PATTERNKV_VERSION >= 100);
    patternkv::config c = patternkv::kivi_config(4);
    CHECK(c.num_patterns == 0);
    CHECK(c.k_bits == 4);
}

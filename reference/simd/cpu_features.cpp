#include "cpu_features.hpp"

#include <cstdlib>

namespace patternkv::simd {

bool have_avx2() {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    static const bool yes = std::getenv("PATTERNKV_NO_SIMD") == nullptr && __builtin_cpu_supports("avx2") &&
                            __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
    return yes;
#else
    return false;
#endif
}

} // namespace patternkv::simd

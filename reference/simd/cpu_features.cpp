#include "cpu_features.hpp"

#include <cstdlib>

#if defined(__x86_64__)
#include <cpuid.h>
#endif
#if defined(__x86_64__) && defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace patternkv::simd {

bool have_avx2() {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    // F16C through CPUID leaf 1 (ECX bit 29): clang before 16 rejects __builtin_cpu_supports("f16c").
    static const bool yes = [] {
        unsigned a = 0, b = 0, c = 0, d = 0;
        const bool f16c = __get_cpuid(1, &a, &b, &c, &d) && (c & (1u << 29)) != 0;
        return std::getenv("PATTERNKV_NO_SIMD") == nullptr && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && f16c;
    }();
    return yes;
#else
    return false;
#endif
}

bool have_avx512() {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    // __builtin_cpu_supports reports AVX-512 only when the OS saves the zmm state (XCR0).
    static const bool yes = have_avx2() && std::getenv("PATTERNKV_NO_AVX512") == nullptr && __builtin_cpu_supports("avx512f") &&
                            __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
                            __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512vbmi");
    return yes;
#else
    return false;
#endif
}

bool have_amx() {
#if defined(__x86_64__) && defined(__linux__) && (defined(__GNUC__) || defined(__clang__))
    static const bool yes = [] {
        unsigned a = 0, b = 0, c = 0, d = 0;
        if (!have_avx512() || std::getenv("PATTERNKV_NO_AMX") != nullptr || !__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
        const bool tile = (d & (1u << 24)) != 0, int8 = (d & (1u << 25)) != 0;  // CPUID.(7, 0):EDX AMX-TILE, AMX-INT8
        // The tile data state is off until the process asks for it (XFEATURE_XTILEDATA = 18).
        constexpr long req_xcomp_perm = 0x1023, xtiledata = 18;
        return tile && int8 && syscall(SYS_arch_prctl, req_xcomp_perm, xtiledata) == 0;
    }();
    return yes;
#else
    return false;
#endif
}

}  // namespace patternkv::simd

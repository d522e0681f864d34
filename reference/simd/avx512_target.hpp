#pragma once
// The target attribute of the AVX-512 kernels (called only when simd::have_avx512() is true), and
// a guard for GCC 12's AVX-512 intrinsics: they pass _mm512_undefined_* as the unused merge source,
// which -W(maybe-)uninitialized reports at every use (GCC bug 105593, fixed in GCC 13).
#define PKV_AVX512 __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi")))

#if defined(__GNUC__) && !defined(__clang__)
#define PKV_AVX512_WARNINGS_OFF                                                                \
    _Pragma("GCC diagnostic push") _Pragma("GCC diagnostic ignored \"-Wmaybe-uninitialized\"") \
        _Pragma("GCC diagnostic ignored \"-Wuninitialized\"")
#define PKV_AVX512_WARNINGS_ON _Pragma("GCC diagnostic pop")
#else
#define PKV_AVX512_WARNINGS_OFF
#define PKV_AVX512_WARNINGS_ON
#endif

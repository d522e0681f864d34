#pragma once
// Runtime CPU feature tests for the AVX2 and AVX-512 paths (internal). Every SIMD function has a
// portable twin computing identical bits; these only pick the faster one.
namespace patternkv::simd {

/// True when the CPU runs AVX2, FMA and F16C (x86-64 only) and PATTERNKV_NO_SIMD is unset.
bool have_avx2();

/// True when have_avx2() and the CPU (and OS) run AVX-512 F, BW, VL, VNNI and VBMI, and
/// PATTERNKV_NO_AVX512 is unset (set it to measure or test the AVX2 kernels on such a CPU).
bool have_avx512();

/// True when have_avx512() and the CPU runs AMX-TILE and AMX-INT8, the OS grants this process the
/// tile state (Linux: arch_prctl ARCH_REQ_XCOMP_PERM, asked once here), and PATTERNKV_NO_AMX is
/// unset (set it to measure or test the AVX-512 kernels on such a CPU).
bool have_amx();

}  // namespace patternkv::simd

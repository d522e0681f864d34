#pragma once
// Runtime CPU feature test for the AVX2 paths (internal). Every AVX2 function has a portable
// twin computing identical bits; this only picks the faster one.
namespace patternkv::simd {

/// True when the CPU runs AVX2, FMA and F16C (x86-64 only) and PATTERNKV_NO_SIMD is unset.
bool have_avx2();

} // namespace patternkv::simd

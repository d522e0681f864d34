#pragma once
/// @file export.hpp
/// PATTERNKV_API marks what the shared library exports. The library is built with hidden symbol
/// visibility, so everything else (core/, reference/, the backends) stays private to it and cannot
/// clash with a consumer's symbols or be linked against by accident.

#if defined(_WIN32)
#define PATTERNKV_API
#elif defined(__GNUC__) || defined(__clang__)
#define PATTERNKV_API __attribute__((visibility("default")))
#else
#define PATTERNKV_API
#endif

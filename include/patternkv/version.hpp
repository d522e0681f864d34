#pragma once
/// @file version.hpp
/// Library version macros.

/// Major version.
#define PATTERNKV_VERSION_MAJOR 0
/// Minor version.
#define PATTERNKV_VERSION_MINOR 2
/// Patch version.
#define PATTERNKV_VERSION_PATCH 0
/// Single comparable number: major * 10000 + minor * 100 + patch.
#define PATTERNKV_VERSION (PATTERNKV_VERSION_MAJOR * 10000 + PATTERNKV_VERSION_MINOR * 100 + PATTERNKV_VERSION_PATCH)

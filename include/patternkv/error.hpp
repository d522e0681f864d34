#pragma once
/// @file error.hpp
/// The one exception type the library throws.

#include <stdexcept>
#include <string>
#include "export.hpp"

namespace patternkv {

/// Thrown for invalid arguments, exhausted capacity, corrupt files and backend failures.
/// The message names the argument and the offending value. When a cache operation throws,
/// the cache is left exactly as it was before the call (strong exception guarantee).
class PATTERNKV_API error : public std::runtime_error {
public:
    /// An error with the given message.
    explicit error(const std::string& what) : std::runtime_error(what) {}
};

}  // namespace patternkv

#pragma once
/// @file eval_error.hpp
/// The one exception type of the evaluation runner (bad files, bad flags, bad text).

#include <stdexcept>
#include <string>

namespace pkveval {

/// Thrown for unreadable or corrupt model/tokenizer files, unsupported formats and invalid options.
class eval_error : public std::runtime_error {
public:
    explicit eval_error(const std::string& what) : std::runtime_error(what) {}
};

}  // namespace pkveval

#pragma once
/// @file data_files.hpp
/// Where the tests find real data: $PATTERNKV_DATA_DIR, else <source root>/../shared/data.
/// A missing file fails the test (never a silent skip).

#include <cstdlib>
#include <filesystem>
#include <string>

#include <doctest/doctest.h>

namespace pkveval::test {

inline std::string data_file(const std::string& name) {
    const char* env = std::getenv("PATTERNKV_DATA_DIR");
    const std::filesystem::path dir =
        env != nullptr && *env != '\0' ? std::filesystem::path(env) : std::filesystem::path(PKVEVAL_SOURCE_ROOT) / ".." / "shared" / "data";
    const std::filesystem::path p = dir / name;
    INFO("real-data file ", p.string(), (env ? " (from PATTERNKV_DATA_DIR)" : " (PATTERNKV_DATA_DIR unset: source-root fallback)"));
    REQUIRE_MESSAGE(std::filesystem::exists(p), "missing real-data file: ", p.string());
    return p.string();
}

}  // namespace pkveval::test

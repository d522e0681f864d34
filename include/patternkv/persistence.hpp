#pragma once
/// @file persistence.hpp
/// Saving layer caches, or a whole model's caches, to a file and loading them back (prefix caching,
/// offload). The format (docs/file-format.md) is versioned and checksummed (CRC-32C) and stores only
/// live data; a load validates the whole file before it constructs a cache and reproduces the saved
/// cache bit for bit.

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "backend.hpp"
#include "layer_cache.hpp"
#include "export.hpp"

namespace patternkv {

/// The file format version this library writes; it reads exactly this version.
inline constexpr std::uint32_t cache_file_version = 5;

/// How a saved cache is rebuilt.
struct load_options {
    /// Capacity per sequence of the loaded caches: 0 = the capacity stored in the file; otherwise it
    /// must be >= the length of every stored sequence (it may be smaller or larger than the saved one).
    std::int64_t max_tokens = 0;
    /// Pages in the loaded caches' shared pool (layer_cache.hpp: cache_capacity::pool_pages): 0 = enough
    /// for every sequence to reach max_tokens; otherwise it must hold every stored page. Files do not
    /// record the saved cache's pool (nor where its pages lay in it).
    std::int64_t pool_pages = 0;
    /// Backend of the loaded caches (the file does not depend on where the cache was saved).
    backend where = backend::cpu;
    /// Upper bound on the bytes one loaded cache may reserve (capacity included); 0 = no bound.
    /// Useful for files from untrusted sources.
    std::uint64_t max_reserved_bytes = 0;
};

/// The file image of one layer cache (a file holding one layer).
/// Device-backed caches are first copied to host memory (which is why this is not safe to call
/// concurrently with other calls on `cache`).
PATTERNKV_API std::vector<std::uint8_t> serialize_layer(const layer_cache& cache);
/// The file image of a model's caches, in layer order (>= 1 layers; each may have its own config).
PATTERNKV_API std::vector<std::uint8_t> serialize_model(std::span<const layer_cache> layers);
/// serialize_model() over caches held elsewhere (no pointer may be null).
PATTERNKV_API std::vector<std::uint8_t> serialize_model(std::span<const layer_cache* const> layers);

/// Writes serialize_layer(cache) to `path` (through a temporary file renamed into place).
/// Throws patternkv::error naming the path when the file cannot be written.
/// @code
///   patternkv::save_layer(cache, "prefix.pkv");
///   patternkv::layer_cache again = patternkv::load_layer("prefix.pkv");
/// @endcode
PATTERNKV_API void save_layer(const layer_cache& cache, const std::string& path);
/// Writes serialize_model(layers) to `path`.
PATTERNKV_API void save_model(std::span<const layer_cache> layers, const std::string& path);
/// Writes serialize_model(layers) to `path`.
PATTERNKV_API void save_model(std::span<const layer_cache* const> layers, const std::string& path);

/// Rebuilds the cache of a one-layer file image. Validates everything first (magic, version, byte
/// order, checksums, config, sizes, counters against capacity, pattern indices against bank sizes,
/// fp16 values finite) and throws patternkv::error saying what is wrong; never reads out of bounds.
PATTERNKV_API layer_cache deserialize_layer(std::span<const std::uint8_t> bytes, const load_options& options = {});
/// Rebuilds every layer of a file image (validating all layers before constructing any).
PATTERNKV_API std::vector<layer_cache> deserialize_model(std::span<const std::uint8_t> bytes, const load_options& options = {});

/// deserialize_layer() of the file at `path` (which must hold exactly one layer).
PATTERNKV_API layer_cache load_layer(const std::string& path, const load_options& options = {});
/// deserialize_model() of the file at `path`.
PATTERNKV_API std::vector<layer_cache> load_model(const std::string& path, const load_options& options = {});

}  // namespace patternkv

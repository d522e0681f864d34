// libFuzzer target: the cache-file loader on arbitrary bytes.
// Byte 0 selects: bit 0 = refresh every checksum first (so mutations reach the checks behind the
// CRCs), bit 1 = load with a capacity override. The rest is the file image. A load must either
// throw patternkv::error or give caches that re-save to a file of the same size, reload to the same
// bytes, and accept attend() and append().
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include <patternkv/patternkv.hpp>

#include "src/file_format.hpp"

namespace {

void check(bool ok, const char* what) {
    if (!ok) {
        std::fprintf(stderr, "fuzz_load: invariant violated: %s\n", what);
        std::abort();
    }
}

void exercise(patternkv::layer_cache& c) {
    const auto& cfg = c.cfg();
    std::vector<int> seqs;
    for (int i = 0; i < c.batch(); ++i)
        if (c.size(i) > 0) seqs.push_back(i);
    const int n = static_cast<int>(seqs.size());
    if (n > 0) {
        std::vector<float> q(static_cast<std::size_t>(n) * cfg.num_q_heads * cfg.head_dim, 0.25f), out(q.size());
        c.attend(seqs, patternkv::view_f32(q.data(), n, cfg.num_q_heads, cfg.head_dim),
                 patternkv::view_f32(out.data(), n, cfg.num_q_heads, cfg.head_dim));
    }
    std::vector<int> room;
    for (int i = 0; i < c.batch(); ++i)
        if (c.size(i) < c.max_tokens()) room.push_back(i);
    const int m = static_cast<int>(room.size());
    std::vector<float> kv(static_cast<std::size_t>(m) * cfg.num_kv_heads * cfg.head_dim, 1.5f);
    if (m > 0)
        c.append(room, patternkv::view_f32(kv.data(), m, cfg.num_kv_heads, cfg.head_dim),
                 patternkv::view_f32(kv.data(), m, cfg.num_kv_heads, cfg.head_dim));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size < 1) return 0;
    std::vector<std::uint8_t> image(data + 1, data + size);
    if (data[0] & 1) patternkv::detail::refresh_checksums(image);
    patternkv::load_options options;
    options.max_reserved_bytes = 16u << 20;  // untrusted input: bound what a load may reserve
    if (data[0] & 2) options.max_tokens = 1 + data[0] * 4;
    std::vector<patternkv::layer_cache> layers;
    try {
        layers = patternkv::deserialize_model(image, options);
    } catch (const patternkv::error&) {
        return 0;
    }
    const std::vector<std::uint8_t> again = patternkv::serialize_model(layers);
    check(again.size() == image.size(), "re-saved file has another size");
    const std::vector<std::uint8_t> third = patternkv::serialize_model(patternkv::deserialize_model(again, options));
    check(third == again, "save(load(save(x))) differs from save(x)");
    for (auto& c : layers) exercise(c);
    return 0;
}

/// GGUF reader: a synthetic file written here parses; every truncation, unknown versions and lying
/// lengths end in eval_error; block formats dequantize to hand-computed values.

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <doctest/doctest.h>

#include "eval_error.hpp"
#include "gguf_reader.hpp"
#include "model.hpp"

using namespace pkveval;

namespace {

/// Minimal GGUF writer for tests.
struct gguf_writer {
    std::vector<std::uint8_t> b;
    template <class T>
    void put(T v) {
        const auto* p = reinterpret_cast<const std::uint8_t*>(&v);
        b.insert(b.end(), p, p + sizeof v);
    }
    void str(const std::string& s) {
        put<std::uint64_t>(s.size());
        b.insert(b.end(), s.begin(), s.end());
    }
    void header(std::uint32_t version, std::uint64_t tensors, std::uint64_t kvs) {
        b.insert(b.end(), {'G', 'G', 'U', 'F'});
        put(version);
        put(tensors);
        put(kvs);
    }
    void kv_u32(const std::string& k, std::uint32_t v) {
        str(k);
        put<std::uint32_t>(4);
        put(v);
    }
    void kv_f32(const std::string& k, float v) {
        str(k);
        put<std::uint32_t>(6);
        put(v);
    }
    void kv_str(const std::string& k, const std::string& v) {
        str(k);
        put<std::uint32_t>(8);
        str(v);
    }
    void kv_strs(const std::string& k, const std::vector<std::string>& v) {
        str(k);
        put<std::uint32_t>(9);
        put<std::uint32_t>(8);
        put<std::uint64_t>(v.size());
        for (const auto& s : v) str(s);
    }
    void tensor(const std::string& name, std::vector<std::uint64_t> dims, std::uint32_t type, std::uint64_t offset) {
        str(name);
        put<std::uint32_t>(static_cast<std::uint32_t>(dims.size()));
        for (auto d : dims) put(d);
        put(type);
        put(offset);
    }
    void align(std::size_t a = 32) {
        while (b.size() % a) b.push_back(0);
    }
};

std::uint16_t half_bits(float f) {  // exact for the small values used below
    std::uint32_t x;
    std::memcpy(&x, &f, 4);
    const std::uint32_t sign = (x >> 16) & 0x8000, exp = (x >> 23) & 0xFF, mant = x & 0x7FFFFF;
    if (exp == 0) return static_cast<std::uint16_t>(sign);
    return static_cast<std::uint16_t>(sign | ((exp - 112) << 10) | (mant >> 13));
}

/// A v3 file: 3 metadata entries, a 2x32 q8_0 tensor and a 32-value q4_1 tensor.
std::vector<std::uint8_t> sample_file(std::uint32_t version = 3) {
    gguf_writer w;
    w.header(version, 2, 3);
    w.kv_str("general.architecture", "llama");
    w.kv_u32("llama.block_count", 7);
    w.kv_strs("tokenizer.ggml.tokens", {"a", "bc", ""});
    w.tensor("m.q8", {32, 2}, 8, 0);
    w.tensor("m.q41", {32}, 3, 96);
    w.align();
    const std::size_t data = w.b.size();
    for (int row = 0; row < 2; ++row) {  // q8_0: d = 0.5 (row 0) / 2 (row 1), q = j - 16
        w.put(half_bits(row == 0 ? 0.5f : 2.0f));
        for (int j = 0; j < 32; ++j) w.put(static_cast<std::int8_t>(j - 16));
    }
    while (w.b.size() < data + 96) w.b.push_back(0);
    w.put(half_bits(0.25f));  // q4_1: d = 0.25, m = -1, low nibble j, high nibble 15 - j
    w.put(half_bits(-1.0f));
    for (int j = 0; j < 16; ++j) w.put(static_cast<std::uint8_t>(j | ((15 - j) << 4)));
    return w.b;
}

}  // namespace

TEST_CASE("gguf: a synthetic v3 file parses and dequantizes") {
    const gguf_file g(sample_file());
    CHECK(g.version() == 3);
    CHECK(g.string("general.architecture") == "llama");
    CHECK(g.number("llama.block_count") == 7);
    CHECK(g.get("tokenizer.ggml.tokens").strings == std::vector<std::string>{"a", "bc", ""});
    CHECK_THROWS_AS(g.number("missing.key"), eval_error);
    CHECK_THROWS_AS(g.number("general.architecture"), eval_error);
    REQUIRE(g.tensors().size() == 2);
    const gguf_tensor_info* q8 = g.find_tensor("m.q8");
    REQUIRE(q8 != nullptr);
    std::vector<float> y(64);
    dequantize(q8->type, g.tensor_bytes(*q8), 64, y.data());
    CHECK(y[0] == -8.0f);
    CHECK(y[31] == 7.5f);
    CHECK(y[32] == -32.0f);
    CHECK(y[63] == 30.0f);
    const gguf_tensor_info* q41 = g.find_tensor("m.q41");
    REQUIRE(q41 != nullptr);
    dequantize(q41->type, g.tensor_bytes(*q41), 32, y.data());
    CHECK(y[0] == -1.0f);   // 0 * 0.25 - 1
    CHECK(y[15] == 2.75f);  // 15 * 0.25 - 1
    CHECK(y[16] == 2.75f);  // high nibble of byte 0 = 15
    CHECK(y[31] == -1.0f);
    CHECK(gguf_file(sample_file(2)).version() == 2);
}

TEST_CASE("gguf: every truncation is a clean error") {
    const std::vector<std::uint8_t> full = sample_file();
    for (std::size_t n = 0; n < full.size(); ++n) {
        CAPTURE(n);
        CHECK_THROWS_AS(gguf_file(std::vector<std::uint8_t>(full.begin(), full.begin() + static_cast<std::ptrdiff_t>(n))), eval_error);
    }
}

TEST_CASE("gguf: unknown versions, bad magic and lying lengths are rejected") {
    for (std::uint32_t v : {0u, 1u, 4u, 0x03000000u}) {
        CAPTURE(v);
        try {
            gguf_file g(sample_file(v));
            FAIL("accepted version ", v);
        } catch (const eval_error& e) {
            CHECK(std::string(e.what()).find("version") != std::string::npos);
        }
    }
    std::vector<std::uint8_t> bad = sample_file();
    bad[0] = 'X';
    CHECK_THROWS_AS(gguf_file{bad}, eval_error);

    gguf_writer w;  // a string claiming 2^40 bytes
    w.header(3, 0, 1);
    w.str("k");
    w.put<std::uint32_t>(8);
    w.put<std::uint64_t>(1ull << 40);
    CHECK_THROWS_AS(gguf_file{w.b}, eval_error);

    gguf_writer a;  // an array claiming 2^60 elements
    a.header(3, 0, 1);
    a.str("k");
    a.put<std::uint32_t>(9);
    a.put<std::uint32_t>(4);
    a.put<std::uint64_t>(1ull << 60);
    CHECK_THROWS_AS(gguf_file{a.b}, eval_error);

    gguf_writer t;  // a tensor whose data lies past the end of the file
    t.header(3, 1, 0);
    t.tensor("x", {32}, 0, 1 << 20);
    t.align();
    CHECK_THROWS_AS(gguf_file{t.b}, eval_error);

    gguf_writer u;  // an unknown value type
    u.header(3, 0, 1);
    u.str("k");
    u.put<std::uint32_t>(99);
    CHECK_THROWS_AS(gguf_file{u.b}, eval_error);
}

TEST_CASE("gguf: unsupported tensor types are named in the error") {
    std::vector<std::uint8_t> block(292, 0);
    try {
        std::vector<float> y(256);
        dequantize(15, block, 256, y.data());
        FAIL("q8_k accepted");
    } catch (const eval_error& e) {
        CHECK(std::string(e.what()).find("q8_k") != std::string::npos);
    }
    CHECK(half_to_float(0x3C00) == 1.0f);
    CHECK(half_to_float(0xC000) == -2.0f);
    CHECK(half_to_float(0x0001) == 5.9604644775390625e-08f);
}

TEST_CASE("gguf: unsupported architectures and tokenizer kinds are named in the error") {
    const auto path = std::filesystem::temp_directory_path() / "pkveval_test_unsupported.gguf";
    auto expect_error = [&](const std::vector<std::uint8_t>& bytes, const std::string& name) {
        {
            std::ofstream f(path, std::ios::binary);
            f.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
        }
        try {
            (void)load_gguf(path.string());
            FAIL("accepted: ", name);
        } catch (const eval_error& e) {
            INFO(e.what());
            CHECK(std::string(e.what()).find(name) != std::string::npos);
        }
    };
    gguf_writer arch;
    arch.header(3, 0, 1);
    arch.kv_str("general.architecture", "qwen2");
    expect_error(arch.b, "'qwen2'");

    gguf_writer tok;  // a complete llama header whose tokenizer kind is unknown
    tok.header(3, 0, 8);
    tok.kv_str("general.architecture", "llama");
    for (const char* k :
         {"llama.embedding_length", "llama.feed_forward_length", "llama.block_count", "llama.attention.head_count", "llama.context_length"})
        tok.kv_u32(k, 64);
    tok.kv_str("tokenizer.ggml.model", "bert");
    tok.kv_strs("tokenizer.ggml.tokens", {"a", "b"});
    expect_error(tok.b, "'bert'");
    std::filesystem::remove(path);
}

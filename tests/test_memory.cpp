// The memory report equals a hand computation of what the cache stores.
#include "support.hpp"

namespace {

patternkv::config shape(patternkv::config c) {
    c.head_dim = 128;
    c.num_kv_heads = 2;
    c.num_q_heads = 4;
    c.sink_tokens = 0;  // byte counts of pages and window only (test_sink.cpp counts the sink rows)
    return c;
}

void fill(patternkv::layer_cache& cache, int prompt, int decode) {
    const int H = 2, d = 128;
    const auto k = pkv_test::synthetic_kv(3, prompt + decode, H, d, true);
    const auto v = pkv_test::synthetic_kv(4, prompt + decode, H, d, false);
    cache.prefill(0, patternkv::view_f32(k.data(), prompt, H, d), patternkv::view_f32(v.data(), prompt, H, d));
    for (int t = prompt; t < prompt + decode; ++t)
        cache.append(patternkv::view_f32(k.data() + static_cast<std::size_t>(t) * H * d, 1, H, d),
                     patternkv::view_f32(v.data() + static_cast<std::size_t>(t) * H * d, 1, H, d));
}

}  // namespace

patternkv::config with_k_patterns(patternkv::config c) {
    c.num_patterns = 32;         // the paper's setting: 32 patterns, K indices and a K bank
    c.k_channel_select = false;  // growing at every flush
    c.tokens_per_pattern = 0;    // every pattern mined from these short prompts
    return c;
}

TEST_CASE("PatternKV-2 default, 300-token prompt: 3 K and 3 V patterns per head (one per 128 mined tokens)") {
    patternkv::layer_cache cache(shape(patternkv::patternkv_config(2)), 1, 1024);
    fill(cache, 300, 0);
    const patternkv::memory_report m = cache.memory();
    CHECK(m.pattern_index_bytes == 4 * (64 + 64));  // 4 bits per quantized token for K and for V (bank of up to 16)
    CHECK(m.gate_bytes == 4 * 128 / 8);
    CHECK(m.bank_bytes == 2 * (3 + 3) * 128 * 2);  // 3 K + 3 V fp16 patterns per head (299 mined tokens)
    CHECK(m.total_bytes() == 32768 + 4096 + 512 + 64 + 3072 + 45056);
}

TEST_CASE("PatternKV-2 with patterns on V only: no K indices, no K bank") {
    patternkv::config c = shape(patternkv::patternkv_config(2));
    c.k_patterns = false;
    patternkv::layer_cache cache(c, 1, 1024);
    fill(cache, 300, 0);
    const patternkv::memory_report m = cache.memory();
    CHECK(m.pattern_index_bytes == 4 * 64);  // 4 bits per quantized V token
    CHECK(m.gate_bytes == 4 * 128 / 8);
    CHECK(m.bank_bytes == 2 * 3 * 128 * 2);  // 3 V fp16 patterns per head
    CHECK(cache.bank_size(0, 0, false) == 0);
    CHECK(m.total_bytes() == 32768 + 4096 + 256 + 64 + 1536 + 45056);
}

TEST_CASE("PatternKV-2 with K patterns, d=128, 2 KV heads, R=128: 300-token prompt") {
    patternkv::layer_cache cache(shape(with_k_patterns(patternkv::patternkv_config(2))), 1, 1024);
    fill(cache, 300, 0);
    // 300 tokens = 2 pages of 128 quantized + 44 in the window; 2 pages x 2 heads = 4 head-pages.
    patternkv::memory_report m = cache.memory();
    CHECK(m.quantized_tokens == 256);
    CHECK(m.window_tokens == 44);
    CHECK(m.code_bytes == 4 * (128 * 128 * 2 / 8 + 128 * 128 * 2 / 8));  // K and V codes: 2 bits x 128 x 128 each
    CHECK(m.scale_min_bytes == 4 * (128 + 128) * 4);                     // K: one group per channel; V: one per token; 2 x fp16
    CHECK(m.pattern_index_bytes == 4 * (128 + 128));                     // one byte per token for K and for V (a bank of up to 64)
    CHECK(m.gate_bytes == 4 * 128 / 8);                                  // one bit per V token
    CHECK(m.bank_bytes == 2 * (32 + 32) * 128 * 2);                      // 32 K + 32 V fp16 patterns per head
    CHECK(m.window_bytes == 44 * 2 * 128 * 2 * 2);                       // fp16 K and V
    CHECK(m.elements == 300 * 2 * 128 * 2);
    CHECK(m.total_bytes() == 32768 + 4096 + 1024 + 64 + 32768 + 45056);
    CHECK(m.bits_per_element() == doctest::Approx(115776.0 * 8 / 153600));
    MESSAGE(m.describe());

    CHECK_THROWS_AS(fill(cache, 0, 0), patternkv::error);  // prefill is refused on a non-empty sequence
}

TEST_CASE("after 84 decode tokens the window is full and unflushed; the next token flushes it and the banks grow by one") {
    patternkv::layer_cache cache(shape(with_k_patterns(patternkv::patternkv_config(2))), 1, 1024);
    const int H = 2, d = 128;
    const auto k = pkv_test::synthetic_kv(3, 385, H, d, true);
    const auto v = pkv_test::synthetic_kv(4, 385, H, d, false);
    cache.prefill(0, patternkv::view_f32(k.data(), 300, H, d), patternkv::view_f32(v.data(), 300, H, d));
    auto append = [&](int t) {
        cache.append(patternkv::view_f32(k.data() + static_cast<std::size_t>(t) * H * d, 1, H, d),
                     patternkv::view_f32(v.data() + static_cast<std::size_t>(t) * H * d, 1, H, d));
    };
    for (int t = 300; t < 384; ++t) append(t);
    patternkv::memory_report m = cache.memory();  // attention of the 384th token sees a full window
    CHECK(m.quantized_tokens == 256);
    CHECK(m.window_tokens == 128);
    CHECK(m.window_bytes == 2 * 2 * 128 * H * d);
    CHECK(cache.bank_size(0, 1, true) == 32);
    append(384);
    m = cache.memory();
    CHECK(m.quantized_tokens == 384);
    CHECK(m.window_tokens == 1);
    CHECK(m.code_bytes == 6 * 2 * 4096);
    CHECK(m.bank_bytes == 2 * (33 + 33) * 128 * 2);
    CHECK(m.window_bytes == 2 * 2 * 1 * H * d);
    CHECK(cache.bank_size(0, 1, true) == 33);
}

TEST_CASE("KIVI-3 stores no pattern data and packs 10 codes per 32-bit word") {
    patternkv::layer_cache cache(shape(patternkv::kivi_config(3)), 1, 1024);
    fill(cache, 256, 0);
    const patternkv::memory_report m = cache.memory();
    // K: 128 channels x ceil(128 / 10) = 13 words; V: 128 tokens x 13 words; 4 head-pages
    CHECK(m.code_bytes == 4 * (128 * 13 * 4 + 128 * 13 * 4));
    CHECK(m.pattern_index_bytes == 0);
    CHECK(m.gate_bytes == 0);
    CHECK(m.bank_bytes == 0);
    CHECK(m.bits_per_element() == doctest::Approx(8.0 * (4 * (2 * 128 * 13 * 4) + 4 * 256 * 4) / (256 * 2 * 128 * 2)));
}

TEST_CASE("per-token K with groups of 32 channels stores 4 scale/min pairs per token") {
    patternkv::config c = shape(patternkv::per_token_config(4));
    c.k_token_group = 32;
    patternkv::layer_cache cache(c, 1, 1024);
    fill(cache, 128, 0);
    const patternkv::memory_report m = cache.memory();
    CHECK(m.scale_min_bytes == 2 * (128 * 4 + 128 * 1) * 4);
    CHECK(m.code_bytes == 2 * 2 * 128 * 128 * 4 / 8);
}

// libFuzzer target: the public entry points' validation. The input decodes into a config (fields
// either small and plausible or raw 32-bit values), a batch and capacity, then a sequence of
// prefill / append / attend / reset / dequantize calls whose shapes, sequence lists, dtypes and
// contents (NaN, Inf, huge values included) come from the bytes. Every call must either succeed or
// throw patternkv::error leaving the cache byte-identical; after each success the counters stay
// consistent, outputs for moderate queries are finite, and the cache survives a save/load round
// trip bit for bit.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <vector>

#include <patternkv/patternkv.hpp>

#include "core/fp16.hpp"

#include "src/layer_cache_state.hpp"

namespace {

void check(bool ok, const char* what) {
    if (!ok) {
        std::fprintf(stderr, "fuzz_api: invariant violated: %s\n", what);
        std::abort();
    }
}

struct bytes {
    const std::uint8_t* p;
    std::size_t n;
    std::uint8_t u8() {
        if (n == 0) return 0;
        --n;
        return *p++;
    }
    std::uint32_t u32() { return u8() | (u8() << 8) | (u8() << 16) | (static_cast<std::uint32_t>(u8()) << 24); }
    // a small value from `choices` most of the time, a raw 32-bit value sometimes
    int pick(std::initializer_list<int> choices) {
        const std::uint8_t b = u8();
        if (b >= 250) return static_cast<int>(u32());
        return choices.begin()[b % choices.size()];
    }
};

// Everything the cache stores, byte for byte (for "unchanged after an error").
std::vector<std::uint8_t> snapshot(const patternkv::layer_cache& c) {
    const patternkv::layer_cache_state& s = patternkv::state_of(c);
    std::vector<std::uint8_t> out;
    const auto add = [&](const auto& v) {
        const auto* b = reinterpret_cast<const std::uint8_t*>(v.data());
        out.insert(out.end(), b, b + v.size() * sizeof(v[0]));
    };
    add(s.k_codes), add(s.v_codes), add(s.v_gate), add(s.k_sm), add(s.v_sm), add(s.k_index), add(s.v_index);
    add(s.k_bank), add(s.v_bank), add(s.k_bank_size), add(s.v_bank_size), add(s.window_k), add(s.window_v);
    add(s.pages), add(s.window_count);
    return out;
}

// A tensor [a][b][c] of the chosen dtype with contents from the input (raw bit patterns).
struct tensor {
    std::vector<std::uint8_t> buf;
    patternkv::const_tensor_view view;
};

tensor make_tensor(bytes& in, std::int64_t a, std::int64_t b, std::int64_t c) {
    tensor t;
    const int kind = in.u8() % 4;
    const auto type = kind == 1 ? patternkv::dtype::f16 : kind == 2 ? patternkv::dtype::bf16 : patternkv::dtype::f32;
    const std::size_t esize = type == patternkv::dtype::f32 ? 4 : 2;
    const std::size_t n = static_cast<std::size_t>(std::max<std::int64_t>(a * b * c, 0));
    t.buf.assign(n * esize, 0);
    const std::uint8_t fill = in.u8();  // 0..127: small floats from the input; else raw bits
    for (std::size_t i = 0; i < n; ++i) {
        if (fill < 128) {
            const float x = (static_cast<float>(in.u8()) - 128.0f) / 16.0f;
            if (type == patternkv::dtype::f32)
                std::memcpy(&t.buf[4 * i], &x, 4);
            else {
                std::uint32_t u;
                std::memcpy(&u, &x, 4);
                // bf16: the top half of the float (x is a multiple of 1/16 below 8, exact in bf16);
                // f16: the same value encoded as a half (exact: 8 significant bits at most)
                const std::uint16_t h =
                    type == patternkv::dtype::bf16 ? static_cast<std::uint16_t>(u >> 16) : patternkv::core::float_to_half(x);
                std::memcpy(&t.buf[2 * i], &h, 2);
            }
        } else {
            for (std::size_t k = 0; k < esize; ++k) t.buf[i * esize + k] = in.u8();
        }
    }
    t.view = patternkv::const_tensor_view::contiguous(t.buf.data(), type, a, b, c);
    if (in.u8() % 8 == 0 && a > 0) {  // a view with the first two dimensions swapped in memory
        t.view.strides = {c, a * c, 1};
    }
    return t;
}

void check_consistent(const patternkv::layer_cache& c) {
    const patternkv::layer_cache_state& s = patternkv::state_of(c);
    for (int i = 0; i < c.batch(); ++i) {
        // windows flush when the next token arrives, so a full window (R tokens) is a valid state; the
        // sink rows count too, and pages follow a full sink
        check(s.window_count[i] >= 0 && s.window_count[i] <= s.geom.window_rows(), "window_count in [0, S + R]");
        check(s.pages[i] == 0 || s.window_count[i] >= s.geom.sink, "pages follow a full sink");
        check(c.size(i) <= c.max_tokens(), "size <= max_tokens");
        for (int h = 0; h < s.heads(); ++h) {
            check(c.bank_size(i, h, false) <= s.bank_capacity && c.bank_size(i, h, true) <= s.bank_capacity, "bank sizes");
        }
    }
}

void round_trip(const patternkv::layer_cache& c) {
    const std::vector<std::uint8_t> file = patternkv::serialize_layer(c);
    patternkv::layer_cache back = patternkv::deserialize_layer(file);  // a real cache always loads
    check(patternkv::serialize_layer(back) == file, "save(load(save(c))) == save(c)");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    bytes in{data, size};
    patternkv::config cfg;
    cfg.head_dim = in.pick({1, 2, 3, 4, 8, 16, 32, 64});
    cfg.num_kv_heads = in.pick({1, 2, 3, 4});
    // wraps like the unsigned product (raw values are meant to be invalid, not UB in the harness)
    cfg.num_q_heads = static_cast<int>(static_cast<std::uint32_t>(cfg.num_kv_heads) * static_cast<std::uint32_t>(in.pick({1, 2, 4, 3})));
    cfg.k_bits = in.pick({2, 3, 4, 8, 5});
    cfg.v_bits = in.pick({2, 3, 4, 8, 1});
    cfg.k_mode = in.u8() % 2 ? patternkv::k_quant_mode::per_token : patternkv::k_quant_mode::per_channel;
    cfg.residual_length = in.pick({1, 2, 4, 8, 16, 32, 5});
    cfg.k_group = in.pick({1, 2, 4, 8, 16, 32, 3});
    cfg.k_token_group = in.pick({0, 1, 2, 4, 8, 16});
    cfg.v_group = in.pick({0, 1, 2, 4, 8, 16});
    cfg.num_patterns = in.pick({0, 1, 2, 4, 8, 16});
    cfg.max_patterns = in.pick({1, 2, 4, 16, 256, 300});
    cfg.grow_patterns = in.u8() % 2;
    cfg.k_patterns = in.u8() % 2;
    cfg.k_channel_select = in.u8() % 2;
    cfg.gate = static_cast<patternkv::gate_mode>(in.u8() % 3);
    cfg.kmeans_iterations = in.pick({1, 2, 3});
    cfg.sink_tokens = in.pick({0, 1, 2, 3, 40});
    if (in.u8() == 255) cfg.sink_tokens = static_cast<int>(in.u32());
    if (in.u8() == 255) {
        const std::uint32_t bits = in.u32();
        std::memcpy(&cfg.softmax_scale, &bits, 4);
    }
    if (in.u8() == 255) cfg.gate_alpha = static_cast<double>(static_cast<std::int32_t>(in.u32())) / 1e6;
    const int batch = in.pick({1, 2, 3, 4, 0});
    const std::int64_t max_tokens = in.pick({1, 7, 16, 40, 100, 0});

    // Construction: the reservation of a valid shape must stay small for the fuzzer to be fast;
    // absurd shapes (beyond 2^62 bytes) must be refused by the constructor, not allocated.
    bool valid = true;
    try {
        cfg.validate();
    } catch (const patternkv::error&) {
        valid = false;
    }
    if (valid && batch >= 1 && max_tokens >= 1) {
        const long double bytes_needed = static_cast<long double>(batch) * cfg.num_kv_heads *
                                             (static_cast<long double>(max_tokens) + cfg.residual_length) * cfg.head_dim * 8 +
                                         static_cast<long double>(batch) * cfg.num_q_heads * (cfg.head_dim + cfg.max_patterns) * 64 *
                                             (static_cast<long double>(max_tokens) / cfg.residual_length + 2) +
                                         static_cast<long double>(batch) * cfg.num_kv_heads * cfg.max_patterns * cfg.head_dim * 4;
        if (bytes_needed > 32.0L * (1 << 20)) return 0;
    }
    std::optional<patternkv::layer_cache> made;
    try {
        made.emplace(cfg, batch, max_tokens);
    } catch (const patternkv::error&) {
        return 0;
    }
    check(valid && batch >= 1 && max_tokens >= 1, "constructor accepted an invalid config or shape");
    patternkv::layer_cache& cache = *made;
    const int H = cfg.num_kv_heads, Hq = cfg.num_q_heads, d = cfg.head_dim;

    for (int op = 0; op < 24 && in.n > 0; ++op) {
        const std::vector<std::uint8_t> before = snapshot(cache);
        const int kind = in.u8() % 6;
        // sequence list: mostly valid, sometimes out of range or repeated
        std::vector<int> seqs;
        const int count = in.u8() % (batch + 2);
        for (int i = 0; i < count; ++i) seqs.push_back(static_cast<int>(in.u8() % (batch + 1)) - (in.u8() == 0 ? 5 : 0));
        const std::int64_t rows = static_cast<std::int64_t>(seqs.size()) + (in.u8() == 0 ? 1 : 0);  // sometimes a bad shape
        bool small_queries = false;
        try {
            switch (kind) {
                case 0:
                case 1: {
                    const int seq = static_cast<int>(in.u8() % (batch + 1));
                    const std::int64_t T = in.u8() % (max_tokens + 3);
                    tensor k = make_tensor(in, T, H, d), v = make_tensor(in, T, in.u8() == 0 ? H + 1 : H, d);
                    cache.prefill(seq, k.view, v.view);
                    break;
                }
                case 2: {
                    tensor k = make_tensor(in, rows, H, d), v = make_tensor(in, rows, H, d);
                    cache.append(seqs, k.view, v.view);
                    break;
                }
                case 3: {
                    tensor q = make_tensor(in, rows, Hq, d);
                    std::vector<float> out(static_cast<std::size_t>(std::max<std::int64_t>(rows, 0)) * Hq * d, -7.0f);
                    cache.attend(seqs, q.view, patternkv::view_f32(out.data(), rows, Hq, d));
                    small_queries = true;
                    for (std::int64_t i = 0; i < rows * Hq * d; ++i) {
                        float x = 0;
                        if (q.view.type == patternkv::dtype::f32)
                            std::memcpy(&x, q.buf.data() + 4 * i, 4);
                        else
                            small_queries = false;
                        small_queries &= std::fabs(x) <= 1000.0f;
                    }
                    if (small_queries)
                        for (const float x : out) check(std::isfinite(x), "attend output finite for |q| <= 1000");
                    break;
                }
                case 4:
                    cache.reset(static_cast<int>(in.u8() % (batch + 1)));
                    break;
                case 5: {
                    const int seq = static_cast<int>(in.u8() % (batch + 1));
                    const std::int64_t T = seq < batch ? cache.size(seq) : 1;
                    std::vector<float> k(static_cast<std::size_t>(T) * H * d), v(k.size());
                    cache.dequantize(seq, patternkv::view_f32(k.data(), T, H, d), patternkv::view_f32(v.data(), T, H, d));
                    for (const float x : k) check(std::isfinite(x), "dequantized K finite");
                    for (const float x : v) check(std::isfinite(x), "dequantized V finite");
                    break;
                }
            }
        } catch (const patternkv::error&) {
            check(snapshot(cache) == before, "a throwing call changed the cache");
            continue;
        }
        check_consistent(cache);
    }
    round_trip(cache);
    return 0;
}

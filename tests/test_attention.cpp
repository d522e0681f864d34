// attend() against a double-precision naive attention over the cache's own reconstruction.
#include <cstring>

#include "core/fp16.hpp"
#include "support.hpp"

namespace {

using pkv_test::max_head_relative_error;
using pkv_test::naive_attention;

struct attention_case {
    const char* method;
    int bits, d, gqa, prompt, decode;
};

patternkv::config make_config(const attention_case& a) {
    patternkv::config c = std::string(a.method) == "kivi"       ? patternkv::kivi_config(a.bits)
                          : std::string(a.method) == "pertoken" ? patternkv::per_token_config(a.bits)
                                                                : patternkv::patternkv_config(a.bits);
    c.head_dim = a.d;
    c.num_kv_heads = 2;
    c.num_q_heads = 2 * a.gqa;
    c.residual_length = 32;
    c.k_group = 32;
    return c;
}

// Prefill `prompt` tokens, append `decode` more (one per step), check attention at the end.
double run_case(const attention_case& a, std::uint64_t seed) {
    const patternkv::config c = make_config(a);
    const int H = c.num_kv_heads, d = c.head_dim, Hq = c.num_q_heads;
    patternkv::layer_cache cache(c, 1, a.prompt + a.decode);
    const int total = a.prompt + a.decode;
    const auto k = pkv_test::synthetic_kv(seed, total, H, d, true);
    const auto v = pkv_test::synthetic_kv(seed + 1, total, H, d, false);
    cache.prefill(0, patternkv::view_f32(k.data(), a.prompt, H, d), patternkv::view_f32(v.data(), a.prompt, H, d));
    for (int t = a.prompt; t < total; ++t)
        cache.append(patternkv::view_f32(k.data() + static_cast<std::size_t>(t) * H * d, 1, H, d),
                     patternkv::view_f32(v.data() + static_cast<std::size_t>(t) * H * d, 1, H, d));
    const auto q = pkv_test::normal_floats(seed + 2, static_cast<std::size_t>(Hq) * d);
    std::vector<float> out(q.size());
    cache.attend(patternkv::view_f32(q.data(), 1, Hq, d), patternkv::view_f32(out.data(), 1, Hq, d));
    return max_head_relative_error(out.data(), naive_attention(cache, 0, q.data()), Hq, d);
}

}  // namespace

TEST_CASE("attend equals double-precision attention over the dequantized cache") {
    // window only (prompt < R), history only (whole pages), mixed, and many flushes.
    const int shapes[][2] = {{20, 0}, {7, 5}, {64, 0}, {96, 0}, {50, 30}, {100, 70}, {0, 40}, {33, 300}};
    const char* methods[] = {"patternkv", "kivi", "pertoken"};
    for (int d : {8, 64, 128})
        for (int gqa : {1, 2, 4})
            for (int bits : {2, 3, 4, 8})
                for (const char* m : methods)
                    for (const auto& sh : shapes) {
                        if (d == 128 && sh[1] > 100 && bits != 2) continue;  // keeps the suite fast; 2-bit covers the long runs
                        const attention_case a{m, bits, d, gqa, sh[0], sh[1]};
                        const std::uint64_t seed = 1000u + static_cast<std::uint64_t>(d * 7 + gqa * 3 + bits + sh[0] + sh[1]);
                        const double err = run_case(a, seed);
                        INFO(fmt::format("{}-{} d={} gqa={} prompt={} decode={} seed={}: rel err {:.3g}", m, bits, d, gqa, sh[0], sh[1],
                                         seed, err));
                        CHECK(err <= pkv_test::on_codes_tolerance(make_config(a)));
                    }
}

TEST_CASE("attention over several history splits (long contexts) matches the dequantized cache") {
    // > 1024 tokens of history: the split records, their pattern histograms and their combine
    for (const char* m : {"patternkv", "kivi"})
        for (int bits : {2, 4})
            for (const auto& sh : {std::pair{2100, 40}, std::pair{1000, 1200}}) {
                const attention_case a{m, bits, 64, 3, sh.first, sh.second};
                const double err = run_case(a, 77 + bits);
                INFO(fmt::format("{}-{} prompt={} decode={}: rel err {:.3g}", m, bits, sh.first, sh.second, err));
                CHECK(err <= pkv_test::on_codes_tolerance(make_config(a)));
            }
}

TEST_CASE("a batch of sequences of different lengths attends each over its own cache") {
    patternkv::config c = patternkv::patternkv_config(4);
    c.head_dim = 64;
    c.num_kv_heads = 2;
    c.num_q_heads = 8;
    c.residual_length = c.k_group = 32;
    const int H = 2, d = 64, Hq = 8, B = 4;
    const int prompts[B] = {5, 64, 40, 0};
    const int first_append[B] = {0, 10, 3, 1};  // sequence i joins decoding at step first_append[i]
    patternkv::layer_cache cache(c, B, 400);
    std::vector<std::vector<float>> ks, vs;
    for (int i = 0; i < B; ++i) {
        ks.push_back(pkv_test::synthetic_kv(50 + i, 400, H, d, true));
        vs.push_back(pkv_test::synthetic_kv(60 + i, 400, H, d, false));
        cache.prefill(i, patternkv::view_f32(ks[i].data(), prompts[i], H, d), patternkv::view_f32(vs[i].data(), prompts[i], H, d));
    }
    for (int step = 0; step < 150; ++step) {
        std::vector<int> seqs;
        std::vector<float> k, v;
        for (int i = 0; i < B; ++i) {
            if (step < first_append[i]) continue;
            const auto t = static_cast<std::size_t>(cache.size(i));
            seqs.push_back(i);
            k.insert(k.end(), ks[i].begin() + t * H * d, ks[i].begin() + (t + 1) * H * d);
            v.insert(v.end(), vs[i].begin() + t * H * d, vs[i].begin() + (t + 1) * H * d);
        }
        const auto n = static_cast<std::int64_t>(seqs.size());
        cache.append(seqs, patternkv::view_f32(k.data(), n, H, d), patternkv::view_f32(v.data(), n, H, d));
    }
    const auto q = pkv_test::normal_floats(77, static_cast<std::size_t>(B) * Hq * d);
    std::vector<float> out(q.size());
    cache.attend(patternkv::view_f32(q.data(), B, Hq, d), patternkv::view_f32(out.data(), B, Hq, d));
    for (int i = 0; i < B; ++i) {
        INFO("sequence " << i << " holds " << cache.size(i) << " tokens");
        CHECK(cache.size(i) == prompts[i] + 150 - first_append[i]);
        const double err = max_head_relative_error(out.data() + static_cast<std::size_t>(i) * Hq * d,
                                                   naive_attention(cache, i, q.data() + static_cast<std::size_t>(i) * Hq * d), Hq, d);
        CHECK(err <= pkv_test::on_codes_tolerance(c));
    }
    // attending a subset in another order gives the same bits as the whole batch
    const int sub[] = {2, 0};
    std::vector<float> qs, out_sub(2 * Hq * d);
    for (int i : sub) qs.insert(qs.end(), q.begin() + i * Hq * d, q.begin() + (i + 1) * Hq * d);
    cache.attend(sub, patternkv::view_f32(qs.data(), 2, Hq, d), patternkv::view_f32(out_sub.data(), 2, Hq, d));
    CHECK(std::memcmp(out_sub.data(), out.data() + 2 * Hq * d, sizeof(float) * Hq * d) == 0);
    CHECK(std::memcmp(out_sub.data() + Hq * d, out.data(), sizeof(float) * Hq * d) == 0);
}

TEST_CASE("strided and fp16/bf16 inputs give the same cache as contiguous fp32 holding the same values") {
    patternkv::config c = patternkv::patternkv_config(2);
    c.head_dim = 16;
    c.num_kv_heads = 2;
    c.num_q_heads = 4;
    c.residual_length = c.k_group = 16;
    const int T = 40, H = 2, d = 16;
    auto k = pkv_test::synthetic_kv(5, T, H, d, true);
    auto v = pkv_test::synthetic_kv(6, T, H, d, false);
    // make every value exactly representable in bf16 (and so in fp16 for this range)
    for (auto* x : {&k, &v})
        for (auto& e : *x) e = patternkv::core::bf16_to_float(patternkv::core::float_to_bf16(e));
    std::vector<std::uint16_t> kb(k.size()), vb(v.size());
    for (std::size_t i = 0; i < k.size(); ++i) {
        kb[i] = patternkv::core::float_to_bf16(k[i]);
        vb[i] = patternkv::core::float_to_bf16(v[i]);
    }
    // a head-major copy read through strides [t][h][j] -> index (h * T + t) * d + j
    std::vector<float> kt(k.size()), vt(v.size());
    for (int t = 0; t < T; ++t)
        for (int h = 0; h < H; ++h)
            for (int j = 0; j < d; ++j) {
                kt[(static_cast<std::size_t>(h) * T + t) * d + j] = k[(static_cast<std::size_t>(t) * H + h) * d + j];
                vt[(static_cast<std::size_t>(h) * T + t) * d + j] = v[(static_cast<std::size_t>(t) * H + h) * d + j];
            }
    const patternkv::const_tensor_view ks{kt.data(), patternkv::dtype::f32, {T, H, d}, {d, T * d, 1}};
    const patternkv::const_tensor_view vs{vt.data(), patternkv::dtype::f32, {T, H, d}, {d, T * d, 1}};
    patternkv::layer_cache a(c, 1, 64), b(c, 1, 64), e(c, 1, 64);
    a.prefill(0, patternkv::view_f32(k.data(), T, H, d), patternkv::view_f32(v.data(), T, H, d));
    b.prefill(0, ks, vs);
    e.prefill(0, patternkv::view_bf16(kb.data(), T, H, d), patternkv::view_bf16(vb.data(), T, H, d));
    const auto q = pkv_test::normal_floats(9, 4 * d);
    std::vector<float> oa(q.size()), ob(q.size()), oe(q.size());
    a.attend(patternkv::view_f32(q.data(), 1, 4, d), patternkv::view_f32(oa.data(), 1, 4, d));
    b.attend(patternkv::view_f32(q.data(), 1, 4, d), patternkv::view_f32(ob.data(), 1, 4, d));
    e.attend(patternkv::view_f32(q.data(), 1, 4, d), patternkv::view_f32(oe.data(), 1, 4, d));
    CHECK(std::memcmp(oa.data(), ob.data(), sizeof(float) * oa.size()) == 0);
    CHECK(std::memcmp(oa.data(), oe.data(), sizeof(float) * oa.size()) == 0);
}

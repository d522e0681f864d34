// PatternKV versus KIVI on a real KV cache: layer 0 of Qwen2.5-14B (protocol of shared/data/README.md).
#include <cmath>
#include <fstream>

#include "core/fp16.hpp"
#include "support.hpp"

namespace {

constexpr int heads = 8, tokens = 220, dim = 128, quantized = 128;

// [head][token][dim] fp16 file -> floats [token][head][dim] (the cache's input layout).
std::vector<float> load_dump(const std::string& name) {
    const std::string path = pkv_test::data_file(name);
    std::ifstream f(path, std::ios::binary);
    std::vector<std::uint16_t> raw(static_cast<std::size_t>(heads) * tokens * dim);
    f.read(reinterpret_cast<char*>(raw.data()), static_cast<std::streamsize>(raw.size() * 2));
    REQUIRE_MESSAGE(f.gcount() == static_cast<std::streamsize>(raw.size() * 2), path << " is truncated");
    std::vector<float> out(raw.size());
    for (int h = 0; h < heads; ++h)
        for (int t = 0; t < tokens; ++t)
            for (int j = 0; j < dim; ++j)
                out[(static_cast<std::size_t>(t) * heads + h) * dim + j] =
                    patternkv::core::half_to_float(raw[(static_cast<std::size_t>(h) * tokens + t) * dim + j]);
    return out;
}

struct errors {
    double k, v, attn;
    double attend;      ///< attention error of attend() on the codes of a cache of the 128 tokens only
    double attend_ref;  ///< the same cache's attention error computed from its dequantized K and V
    double bits;        ///< stored bits per element of the quantized history (codes, scales, indices, gate bits, banks)
};

double sq(double x) { return x * x; }

// Exact-vs-reconstructed attention of the 92 held-out keys (as queries, / sqrt(128)) over the
// first 128 tokens, per head; relative squared errors summed over heads.
// The attention error computed by attend() on the codes (the decode path, with its integer
// multipliers) and, for the same cache, from its dequantized K and V: a cache holding exactly the
// first 128 tokens (one page, empty window) attends with each held-out key as the query.
std::pair<double, double> attend_error(const patternkv::config& c, const std::vector<float>& k, const std::vector<float>& v) {
    patternkv::config ca = c;
    ca.num_q_heads = heads;
    patternkv::layer_cache cache(ca, 1, quantized);
    cache.prefill(0, patternkv::view_f32(k.data(), quantized, heads, dim), patternkv::view_f32(v.data(), quantized, heads, dim));
    REQUIRE(cache.quantized_size(0) == quantized);
    const auto at = [](int t, int h, int j) { return (static_cast<std::size_t>(t) * heads + h) * dim + j; };
    std::vector<float> kh(static_cast<std::size_t>(quantized) * heads * dim), vh(kh.size());
    cache.dequantize(0, patternkv::view_f32(kh.data(), quantized, heads, dim), patternkv::view_f32(vh.data(), quantized, heads, dim));
    // softmax weights of query qi, head h over keys kk (exact or dequantized), then outputs over vv
    const auto weights = [&](const std::vector<float>& kk, int qi, int h) {
        std::vector<double> s(quantized);
        double mx = -1e300, l = 0;
        for (int t = 0; t < quantized; ++t) {
            double a = 0;
            for (int i = 0; i < dim; ++i) a += k[at(qi, h, i)] / std::sqrt(128.0) * kk[at(t, h, i)];
            mx = std::max(mx, s[t] = a);
        }
        for (int t = 0; t < quantized; ++t) l += s[t] = std::exp(s[t] - mx);
        for (double& x : s) x /= l;
        return s;
    };
    const auto output = [&](const std::vector<double>& w, const std::vector<float>& vv, int h, int j) {
        double o = 0;
        for (int t = 0; t < quantized; ++t) o += w[t] * vv[at(t, h, j)];
        return o;
    };
    double an = 0, rn = 0, ad = 0;
    std::vector<float> out(static_cast<std::size_t>(heads) * dim);
    for (int qi = quantized; qi < tokens; ++qi) {
        cache.attend(patternkv::view_f32(k.data() + at(qi, 0, 0), 1, heads, dim), patternkv::view_f32(out.data(), 1, heads, dim));
        for (int h = 0; h < heads; ++h) {
            const auto we = weights(k, qi, h), wq = weights(kh, qi, h);
            for (int j = 0; j < dim; ++j) {
                const double o = output(we, v, h, j);
                an += sq(out[at(0, h, j)] - o);
                rn += sq(output(wq, vh, h, j) - o);
                ad += sq(o);
            }
        }
    }
    return {an / ad, rn / ad};
}

errors measure(const patternkv::config& c, const std::vector<float>& k, const std::vector<float>& v) {
    patternkv::layer_cache cache(c, 1, tokens);
    cache.prefill(0, patternkv::view_f32(k.data(), tokens, heads, dim), patternkv::view_f32(v.data(), tokens, heads, dim));
    REQUIRE(cache.quantized_size(0) == quantized);
    const patternkv::memory_report mem = cache.memory();
    const double bits = 8.0 * static_cast<double>(mem.total_bytes() - mem.window_bytes) / (2.0 * quantized * heads * dim);
    std::vector<float> kh(k.size()), vh(v.size());
    cache.dequantize(0, patternkv::view_f32(kh.data(), tokens, heads, dim), patternkv::view_f32(vh.data(), tokens, heads, dim));
    const auto at = [](int t, int h, int j) { return (static_cast<std::size_t>(t) * heads + h) * dim + j; };
    double kn = 0, kd = 0, vn = 0, vd = 0, an = 0, ad = 0;
    for (int h = 0; h < heads; ++h) {
        for (int t = 0; t < quantized; ++t)
            for (int j = 0; j < dim; ++j) {
                kn += sq(kh[at(t, h, j)] - k[at(t, h, j)]);
                kd += sq(k[at(t, h, j)]);
                vn += sq(vh[at(t, h, j)] - v[at(t, h, j)]);
                vd += sq(v[at(t, h, j)]);
            }
        for (int qi = quantized; qi < tokens; ++qi) {
            std::vector<double> se(quantized), sq_(quantized);
            double me = -1e300, mq = -1e300;
            for (int t = 0; t < quantized; ++t) {
                double a = 0, b = 0;
                for (int j = 0; j < dim; ++j) {
                    const double q = k[at(qi, h, j)] / std::sqrt(128.0);
                    a += q * k[at(t, h, j)];
                    b += q * kh[at(t, h, j)];
                }
                se[t] = a;
                sq_[t] = b;
                me = std::max(me, a);
                mq = std::max(mq, b);
            }
            double le = 0, lq = 0;
            for (int t = 0; t < quantized; ++t) {
                le += se[t] = std::exp(se[t] - me);
                lq += sq_[t] = std::exp(sq_[t] - mq);
            }
            for (int j = 0; j < dim; ++j) {
                double oe = 0, oq = 0;
                for (int t = 0; t < quantized; ++t) {
                    oe += se[t] / le * v[at(t, h, j)];
                    oq += sq_[t] / lq * vh[at(t, h, j)];
                }
                an += sq(oq - oe);
                ad += sq(oe);
            }
        }
    }
    const auto [attend, attend_ref] = attend_error(c, k, v);
    return {kn / kd, vn / vd, an / ad, attend, attend_ref, bits};
}

patternkv::config with_shape(patternkv::config c) {
    c.head_dim = dim;
    c.num_kv_heads = c.num_q_heads = heads;
    c.sink_tokens = 0;  // the 128 tokens form exactly one page: this measures page quantization
    return c;
}

// KIVI's error at `bits`, log-linear between the two KIVI rows around it (NaN outside them).
double kivi_at(const std::vector<errors>& kivi, double bits) {
    for (std::size_t i = 0; i + 1 < kivi.size(); ++i)
        if (bits >= kivi[i].bits && bits <= kivi[i + 1].bits) {
            const double f = (bits - kivi[i].bits) / (kivi[i + 1].bits - kivi[i].bits);
            return std::exp(std::log(kivi[i].attn) + f * (std::log(kivi[i + 1].attn) - std::log(kivi[i].attn)));
        }
    return std::nan("");
}

}  // namespace

TEST_CASE("Qwen2.5-14B layer 0: PatternKV against KIVI at equal code bits and at equal storage") {
    const auto k = load_dump("qwen2.5-14b_L0_keys_8x220x128.f16");
    const auto v = load_dump("qwen2.5-14b_L0_values_8x220x128.f16");
    struct row {
        const char* name;
        patternkv::config cfg;
    };
    auto paper = [](patternkv::config c) {  // the paper's setting
        c.num_patterns = 32;
        c.k_channel_select = false;
        c.tokens_per_pattern = 0;
        return c;
    };
    auto v_only = [](patternkv::config c) {
        c.k_patterns = false;
        return c;
    };
    auto patterns = [](patternkv::config c, int n) {
        c.num_patterns = n;
        c.tokens_per_pattern = 0;
        return c;
    };
    const row rows[] = {{"KIVI-2", with_shape(patternkv::kivi_config(2))},
                        {"KIVI-3", with_shape(patternkv::kivi_config(3))},
                        {"KIVI-4", with_shape(patternkv::kivi_config(4))},
                        {"PatternKV-2", with_shape(patternkv::patternkv_config(2))},
                        {"PatternKV-2 paper", with_shape(paper(patternkv::patternkv_config(2)))},
                        {"PatternKV-2 V only", with_shape(v_only(patternkv::patternkv_config(2)))},
                        {"PatternKV-2 V, k=4", with_shape(v_only(patterns(patternkv::patternkv_config(2), 4)))},
                        {"PatternKV-4", with_shape(patternkv::patternkv_config(4))},
                        {"per-token-2", with_shape(patternkv::per_token_config(2))}};
    std::vector<errors> e;
    for (const auto& r : rows) e.push_back(measure(r.cfg, k, v));
    const std::vector<errors> kivi(e.begin(), e.begin() + 3);
    fmt::print("\n{:<20} {:>6} {:>10} {:>10} {:>12} {:>20} {:>16} {:>16}\n", "method", "bits", "K relMSE", "V relMSE", "attn relMSE",
               "KIVI attn @ bits", "128: dequant", "128: attend");
    for (std::size_t i = 0; i < e.size(); ++i) {
        fmt::print("{:<20} {:>6.3f} {:>10.4f} {:>10.4f} {:>12.4f} {:>20.4f} {:>16.4f} {:>16.4f}\n", rows[i].name, e[i].bits, e[i].k, e[i].v,
                   e[i].attn, kivi_at(kivi, e[i].bits), e[i].attend_ref, e[i].attend);
        // attention on the codes (integer multipliers) may cost at most 1% relative over the
        // attention of the same cache's dequantized K and V (issue 13's accuracy budget)
        CHECK(e[i].attend <= 1.01 * e[i].attend_ref);
    }
    const errors kivi2 = e[0], kivi4 = e[2], pkv2 = e[3], paper2 = e[4], vonly2 = e[5], pkv2_k4 = e[6], pkv4 = e[7], pertoken2 = e[8];
    // at equal code bits (what method.md's reference numbers compare)
    CHECK(paper2.attn <= 0.5 * kivi2.attn);
    CHECK(paper2.v <= 0.35 * kivi2.v);
    CHECK(paper2.k < kivi2.k);
    CHECK(pkv2.attn <= 0.6 * kivi2.attn);
    CHECK(pkv2.k < kivi2.k);     // the selected K channels still lower K's error
    CHECK(vonly2.k == kivi2.k);  // patterns on V only: K is stored exactly as KIVI stores it
    CHECK(pkv4.attn < kivi4.attn);
    CHECK(pkv4.v < kivi4.v);
    CHECK(kivi2.attn < pertoken2.attn);  // per-channel K beats per-token K on outlier channels
    // at equal storage: over only 128 quantized tokens the fp16 banks cost a lot (32 patterns: ~2 bits
    // per element for K and V); the default mines one pattern per 128 prompt tokens (2 here, ~0.3
    // bits) and beats KIVI, as do 4 patterns on V only.
    CHECK(paper2.bits > kivi2.bits + 1.9);
    CHECK(pkv2.attn < 0.9 * kivi_at(kivi, pkv2.bits));
    CHECK(pkv2_k4.attn < kivi_at(kivi, pkv2_k4.bits));
    // The reference prototype's KIVI figures depend on no random choice: ours must agree closely.
    // (to their printed precision: 0.0148 and 0.6315; ours 0.01481 and 0.6321)
    CHECK(kivi2.k == doctest::Approx(0.0148).epsilon(0.01));
    CHECK(kivi2.v == doctest::Approx(0.6315).epsilon(0.01));
    // the figures README.md and docs/accuracy.md quote, to their printed digits
    CHECK(kivi2.attn == doctest::Approx(0.5500).epsilon(0.001));
    CHECK(kivi4.attn == doctest::Approx(0.0161).epsilon(0.005));
    CHECK(paper2.attn == doctest::Approx(0.1779).epsilon(0.001));
    CHECK(paper2.bits == doctest::Approx(6.316).epsilon(0.001));
    CHECK(pkv2.attn == doctest::Approx(0.2964).epsilon(0.001));
    CHECK(pkv2.bits == doctest::Approx(2.535).epsilon(0.001));
}

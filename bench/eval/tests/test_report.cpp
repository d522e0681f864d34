/// JSON and SVG output carry the required fields and every method.

#include <cmath>
#include <string>
#include <tuple>
#include <vector>

#include <doctest/doctest.h>

#include "evaluate.hpp"
#include "report.hpp"

using namespace pkveval;

TEST_CASE("report: JSON has the required fields, SVG has both panels") {
    eval_report r;
    r.model = "m \"quoted\"";
    r.text = "t.txt";
    r.prefill = 10;
    r.tokens = 5;
    r.decode_seconds = 1;
    auto result = [](std::string name, std::string family, int bits, double bpe, double kl, double ppl, double top1, double tps) {
        method_result m;
        m.method = std::move(name), m.family = std::move(family), m.k_bits = m.v_bits = bits;
        m.bits_per_element = m.bits_at_end = bpe, m.kl = kl, m.ppl = ppl, m.mean_nll = std::log(ppl), m.top1 = top1, m.tokens_per_s = tps;
        return m;
    };
    r.results.push_back(result("fp32", "fp32", 32, 32, 0.0, 2.718, 1.0, 50));
    r.results.push_back(result("kivi-2", "kivi", 2, 3.1, 0.05, 3.0, 0.8, 25));
    const std::string j = format_json(r);
    for (const char* key :
         {"\"model\": \"m \\\"quoted\\\"\"", "\"text\": \"t.txt\"", "\"prefill\": 10", "\"tokens\": 5", "\"results\": [",
          "\"method\": \"kivi-2\"", "\"bits_per_element\": 3.1", "\"ppl\": 3", "\"kl\": 0.05", "\"top1\": 0.8", "\"tokens_per_s\": 25"}) {
        CAPTURE(key);
        CHECK(j.find(key) != std::string::npos);
    }
    const std::string s = format_svg(r);
    CHECK(s.find("<svg") == 0);
    CHECK(s.find("KL(fp32 || method)") != std::string::npos);
    CHECK(s.find("perplexity") != std::string::npos);
    CHECK(s.find(">kivi-2</text>") != std::string::npos);
    CHECK(format_table(r).find("kivi-2") != std::string::npos);
}

TEST_CASE("report: KIVI's KL is interpolated log-linearly in bits between its points") {
    eval_report r;
    for (auto [bits, bpe, kl] : {std::tuple{2, 2.0, 0.5}, std::tuple{4, 4.0, 0.005}}) {
        method_result m;
        m.family = "kivi", m.k_bits = m.v_bits = bits, m.bits_per_element = bpe, m.kl = kl;
        r.results.push_back(m);
    }
    method_result skew;  // K and V bits differ: not a point of the yardstick
    skew.family = "kivi", skew.k_bits = 4, skew.v_bits = 2, skew.bits_per_element = 3.0, skew.kl = 1.0;
    r.results.push_back(skew);
    CHECK(kivi_kl_at(r, 3.0) == doctest::Approx(0.05));
    CHECK(kivi_kl_at(r, 2.0) == doctest::Approx(0.5));
    CHECK(std::isnan(kivi_kl_at(r, 1.9)));
    CHECK(std::isnan(kivi_kl_at(r, 4.5)));
}

TEST_CASE("report: KL over KIVI at equal bits has a paired standard error over blocks") {
    eval_report r;
    auto row = [](std::string family, int bits, double bpe, std::vector<double> blocks) {
        method_result m;
        m.family = std::move(family), m.k_bits = m.v_bits = bits, m.bits_per_element = bpe, m.kl_blocks = blocks;
        for (double b : blocks) m.kl += b / static_cast<double>(blocks.size());
        return m;
    };
    r.results.push_back(row("kivi", 2, 2.0, {0.4, 0.8, 0.6, 0.2}));
    r.results.push_back(row("kivi", 4, 4.0, {0.004, 0.008, 0.006, 0.002}));
    // exactly half of KIVI's interpolation in every block: ratio 0.5, no spread
    r.results.push_back(row("patternkv", 2, 3.0, {0.02, 0.04, 0.03, 0.01}));
    const auto [ratio, se] = kl_over_kivi(r, r.results[2]);
    CHECK(ratio == doctest::Approx(0.5));
    CHECK(se == doctest::Approx(0.0).epsilon(1e-12));
    // the same mean KL spread unevenly over the blocks: same ratio, now with an error
    r.results.push_back(row("patternkv", 3, 3.0, {0.04, 0.02, 0.02, 0.02}));
    const auto [ratio2, se2] = kl_over_kivi(r, r.results[3]);
    CHECK(ratio2 == doctest::Approx(0.5));
    CHECK(se2 > 0.05);
}

TEST_CASE("report: batch-means standard error stays inside chunks") {
    // two chunks of 4 values, blocks of 2: block means 1, 3 | 5, 7
    const std::vector<double> x = {1, 1, 3, 3, 5, 5, 7, 7};
    const auto [mean, se] = mean_and_se(x, 2, 2);
    CHECK(mean == doctest::Approx(4.0));
    CHECK(se == doctest::Approx(std::sqrt((9.0 + 1 + 1 + 9) / 3 / 4)));
    const auto [m1, se1] = mean_and_se(std::vector<double>{2, 2, 2, 2}, 1, 4);  // one block: no error estimate
    CHECK(m1 == doctest::Approx(2.0));
    CHECK(se1 == 0.0);
}

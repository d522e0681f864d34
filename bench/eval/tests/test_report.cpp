/// JSON and SVG output carry the required fields and every method.

#include <string>

#include <doctest/doctest.h>

#include "report.hpp"

using namespace pkveval;

TEST_CASE("report: JSON has the required fields, SVG has both panels") {
    eval_report r;
    r.model = "m \"quoted\"";
    r.text = "t.txt";
    r.prefill = 10;
    r.tokens = 5;
    r.decode_seconds = 1;
    r.results.push_back({"fp32", "", 32, 100, 1.0, 2.718, 0.0, 1.0, 0.1, 50});
    r.results.push_back({"kivi-2", "cfg", 3.1, 20, 1.1, 3.0, 0.05, 0.8, 0.2, 25});
    const std::string j = format_json(r);
    for (const char* key : {"\"model\": \"m \\\"quoted\\\"\"", "\"text\": \"t.txt\"", "\"prefill\": 10", "\"tokens\": 5", "\"results\": [",
                            "\"method\": \"kivi-2\"", "\"bits_per_element\": 3.1", "\"ppl\": 3", "\"kl\": 0.05", "\"top1\": 0.8",
                            "\"tokens_per_s\": 25"}) {
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

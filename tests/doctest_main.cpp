// The doctest main of every test executable, with one addition: a test case that cannot run here
// (no AVX2, no GPU) calls pkv_test::skip(why) and returns; the executable then prints every reason
// and exits 77, which Meson reports as SKIP, so a check that did not run is never counted as passed.
// Executables mixing runnable and skippable cases are registered twice in tests/meson.build with
// doctest filters, so the runnable part still counts.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <algorithm>
#include <cstdio>
#include <mutex>
#include <string>
#include <vector>

namespace {
std::mutex skip_mutex;
std::vector<std::string> skip_reasons;
}  // namespace

namespace pkv_test {
void skip(const std::string& why) {  // a case that skips from inside a loop says so once
    const std::lock_guard<std::mutex> lock(skip_mutex);
    if (std::find(skip_reasons.begin(), skip_reasons.end(), why) == skip_reasons.end()) skip_reasons.push_back(why);
}
}  // namespace pkv_test

int main(int argc, char** argv) {
    doctest::Context context(argc, argv);
    const int rc = context.run();
    if (context.shouldExit() || rc != 0 || skip_reasons.empty()) return rc;
    std::fprintf(stderr, "\n*** SKIPPED: %zu test case(s) could not run here ***\n", skip_reasons.size());
    for (const auto& why : skip_reasons) std::fprintf(stderr, "***   %s\n", why.c_str());
    return 77;
}

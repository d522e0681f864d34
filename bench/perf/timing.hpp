#pragma once
// Wall-clock timing for the benchmarks: median of repeated runs after a warm-up.
#include <algorithm>
#include <chrono>
#include <vector>

namespace pkv_bench {

inline double now_seconds() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

/// Median seconds of `reps` runs of f (after one warm-up run).
template <class F>
double median_seconds(int reps, F&& f) {
    f();
    std::vector<double> t;
    for (int i = 0; i < reps; ++i) {
        const double t0 = now_seconds();
        f();
        t.push_back(now_seconds() - t0);
    }
    std::sort(t.begin(), t.end());
    return t[t.size() / 2];
}

}  // namespace pkv_bench

#pragma once
// The k-means assignment step with Elkan's triangle-inequality bounds: per token an upper bound on
// the distance to its centroid and a lower bound on the distance to every other centroid, carried
// across iterations by how far each centroid moved. A distance is evaluated only when the bounds
// cannot prove that centroid farther than the assigned one, so late Lloyd iterations evaluate few.
//
// The result is core::full_assignment's, bit for bit (tests/test_kmeans_bounds.cpp): a centroid is
// skipped only when its computed squared distance is provably *strictly* greater than that of a
// centroid that was evaluated, so the winner and the lowest-index tie-break are unchanged. "Provably"
// covers the rounding of the canonical float distance: with at most 16 sequential adds per lane,
// a 5-level fold, one subtraction and one product, the computed square q of a true distance D obeys
// |q - D^2| <= 23 u D^2 + d 2^-150 (u = 2^-24; the last term is gradual underflow), i.e. within
// relative 1.4e-6 and absolute 3.6e-43 for d <= 512. The bounds use 1e-5 and 1e-40, seven times the
// worst case; the bounds' own double arithmetic errs below 1e-12 relative. The bounds never affect
// which distances are compared, only whether one is evaluated: this is a CPU speed-up of core's step.
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <vector>

namespace patternkv {

template <class Distance>
class elkan_assignment {
public:
    /// The step for up to `tokens` rows of `d` floats and `k` centroids.
    elkan_assignment(int tokens, int k, int d)
        : lower_(static_cast<std::size_t>(tokens) * k), upper_(tokens), previous_(static_cast<std::size_t>(k) * d),
          moved_(k), drift_(k), between_(static_cast<std::size_t>(k) * k), closest_other_(k) {}

    /// Same contract as core::full_assignment<Distance>::operator().
    void operator()(const float* x, int tokens, int d, const float* centroids, int k, int* assign) {
        if (!started_) {
            first_pass(x, tokens, d, centroids, k, assign);
            started_ = true;
        } else {
            track_centroids(centroids, k, d);
            for (int t = 0; t < tokens; ++t) reassign(x + static_cast<std::ptrdiff_t>(t) * d, t, d, centroids, k, assign[t]);
        }
        std::copy(centroids, centroids + static_cast<std::ptrdiff_t>(k) * d, previous_.begin());
    }

    /// Distances evaluated so far (core::full_assignment evaluates tokens x k per call).
    std::int64_t evaluated() const { return evaluated_; }

private:
    static constexpr double rel = 1e-5, abs = 1e-40, slack = 1.0 + 1e-15;

    // Bounds on the true distance D from a computed square q (see the header comment).
    // (Products with the rounded reciprocals err by 1e-16 relative, inside the 7x margin.)
    static double lower_from(float q) { return std::sqrt(std::max(0.0, (static_cast<double>(q) - abs) * (1.0 / (1.0 + rel)))); }
    static double upper_from(float q) { return std::sqrt((static_cast<double>(q) + abs) * (1.0 / (1.0 - rel))); }
    // Every true distance above reach(up) computes to a square strictly above that of every true
    // distance <= up: L^2 (1 - rel) - abs > up^2 (1 + rel) + abs.
    static double reach(double up) { return std::sqrt((up * up * (1.0 + rel) + 2.0 * abs) * (1.0 / (1.0 - rel))) * slack; }

    float distance(const float* row, const float* centroids, int c, int d) {
        ++evaluated_;
        return Distance::sq_dist(row, centroids + static_cast<std::ptrdiff_t>(c) * d, d);
    }

    // Lower bounds are stored plus the centroid's drift at the time, so that moving centroids
    // costs nothing per token: the current bound is stored - drift_[c] (rounded down here).
    void store_lower(double* lo, int c, float q) const { lo[c] = (lower_from(q) + drift_[c]) * (1.0 - 2e-15); }

    void first_pass(const float* x, int tokens, int d, const float* centroids, int k, int* assign) {
        for (int t = 0; t < tokens; ++t) {
            const float* row = x + static_cast<std::ptrdiff_t>(t) * d;
            double* lo = lower_.data() + static_cast<std::ptrdiff_t>(t) * k;
            int best = 0;
            float best_q = 0.0f;
            for (int c = 0; c < k; ++c) {
                const float q = distance(row, centroids, c, d);
                store_lower(lo, c, q);
                if (c == 0 || q < best_q) {
                    best_q = q;
                    best = c;
                }
            }
            assign[t] = best;
            upper_[t] = upper_from(best_q);
        }
    }

    // How far each centroid moved since the last call (upper bound, accumulated in drift_) and the
    // pairwise centroid distances (lower bounds), in double from the float coordinates.
    void track_centroids(const float* centroids, int k, int d) {
        const auto dist = [d](const float* a, const float* b) {
            double s = 0.0;
            for (int j = 0; j < d; ++j) {
                const double t = static_cast<double>(a[j]) - b[j];
                s += t * t;
            }
            return std::sqrt(s);
        };
        for (int c = 0; c < k; ++c) {
            moved_[c] = dist(centroids + c * d, previous_.data() + c * d) * (1.0 + 1e-12);
            drift_[c] += moved_[c];
        }
        for (int a = 0; a < k; ++a) {
            closest_other_[a] = HUGE_VAL;
            for (int c = 0; c < k; ++c) {
                if (c == a) continue;
                const double s = c < a ? between_[static_cast<std::size_t>(c) * k + a]
                                       : dist(centroids + a * d, centroids + c * d) * (1.0 - 1e-12);
                between_[static_cast<std::size_t>(a) * k + c] = s;
                closest_other_[a] = std::min(closest_other_[a], s);
            }
        }
    }

    // Bit c - c0 set for the centroids in [c0, c1) that the bounds do not prune (branch-free, so it
    // vectorizes; pruning a candidate later with tighter bounds is still exact).
    std::uint64_t candidates(const double* lo, int a, double up, double r, int c0, int c1, int k) const {
        const double* from_a = between_.data() + static_cast<std::size_t>(a) * k;
        const double far = (up + r) * slack;
        std::uint64_t m = 0;
        for (int c = c0; c < c1; ++c)
            m |= static_cast<std::uint64_t>((lo[c] <= (r + drift_[c]) * slack) & (from_a[c] <= far)) << (c - c0);
        return m;
    }

    // D(x, c) >= lower bound of c, and D(x, c) >= D(c_a, c) - D(x, c_a) (triangle inequality).
    void reassign(const float* row, int t, int d, const float* centroids, int k, int& assigned) {
        double* lo = lower_.data() + static_cast<std::ptrdiff_t>(t) * k;
        int a = assigned;
        double up = upper_[t] + moved_[a];
        double r = reach(up);
        if (closest_other_[a] > (up + r) * slack) {  // no centroid can win
            upper_[t] = up;
            return;
        }
        bool tight = false;
        float qa = 0.0f;
        const auto pruned = [&](int c) {
            return lo[c] > (r + drift_[c]) * slack || between_[static_cast<std::size_t>(a) * k + c] > (up + r) * slack;
        };
        for (int c0 = 0; c0 < k; c0 += 64) {
            for (std::uint64_t m = candidates(lo, a, up, r, c0, std::min(k, c0 + 64), k); m != 0; m &= m - 1) {
                const int c = c0 + std::countr_zero(m);
                if (c == a || pruned(c)) continue;  // bounds may have tightened since the mask
                if (!tight) {
                    qa = distance(row, centroids, a, d);
                    up = upper_from(qa);
                    r = reach(up);
                    tight = true;
                    if (pruned(c)) continue;
                }
                const float q = distance(row, centroids, c, d);
                store_lower(lo, c, q);
                if (q < qa || (q == qa && c < a)) {  // core's scan keeps the lowest index among equals
                    store_lower(lo, a, qa);
                    a = c;
                    qa = q;
                    up = upper_from(q);
                    r = reach(up);
                }
            }
        }
        upper_[t] = up;
        assigned = a;
    }

    std::vector<double> lower_;          // [tokens][k] lower bound on D(x_t, c) + drift_[c] when stored
    std::vector<double> upper_;          // [tokens] upper bound on D(x_t, c_assigned)
    std::vector<float> previous_;        // [k][d] centroids of the previous call
    std::vector<double> moved_, drift_;  // [k] movement in the last call, and in all calls
    std::vector<double> between_;        // [k][k] lower bounds on D(c_a, c)
    std::vector<double> closest_other_;  // [k] min over c != a of between_[a][c]
    std::int64_t evaluated_ = 0;
    bool started_ = false;
};

} // namespace patternkv

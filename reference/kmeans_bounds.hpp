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
// worst case, and every rounding of their own arithmetic (float square roots and centroid distances,
// double sums) goes the safe way by an explicit factor. The bounds never affect which distances are
// compared, only whether one is evaluated: this is a CPU speed-up of core's step.
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
        : lower_(static_cast<std::size_t>(tokens) * k),
          upper_(tokens),
          others_(tokens),
          previous_(static_cast<std::size_t>(k) * d),
          moved_(k),
          drift_(k),
          between_(static_cast<std::size_t>(k) * k),
          closest_other_(k),
          which_(k),
          q_(k) {}

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

    // Bounds on the true distance D from a computed square q: D >= sqrt((q - abs) / (1 + rel)) and
    // D <= sqrt((q + abs) / (1 - rel)). Evaluated in float (the sqrt is the hot instruction): the
    // factors 0.999989 and 1.000011 and the term 2e-38 cover the float product, difference and
    // sqrt roundings (each <= 6e-8 relative, or 2^-150 absolute) with room to spare.
    static double lower_from(float q) { return std::sqrt(std::max(0.0f, q * 0.999989f - 2e-38f)); }
    static double upper_from(float q) { return std::sqrt(q * 1.000011f + 2e-38f); }
    // Every true distance above reach(up) computes to a square strictly above that of every true
    // distance <= up, i.e. L^2 (1 - rel) - abs > up^2 (1 + rel) + abs. Using
    // sqrt(a + b) <= sqrt(a) + sqrt(b): reach = up sqrt((1 + rel) / (1 - rel)) + sqrt(2 abs / (1 - rel)),
    // both constants rounded up.
    static double reach(double up) { return up * 1.0000100001 + 1.5e-20; }

    float distance(const float* row, const float* centroids, int c, int d) {
        ++evaluated_;
        return Distance::sq_dist(row, centroids + static_cast<std::ptrdiff_t>(c) * d, d);
    }
    void distances(const float* row, const float* centroids, const int* which, int n, int d, float* q) {
        evaluated_ += n;
        Distance::sq_dists(row, centroids, which, n, d, q);
    }

    // Lower bounds are stored plus the centroid's drift at the time, so that moving centroids
    // costs nothing per token: the current bound is stored - drift_[c] (rounded down here).
    void store_lower(double* lo, int c, float q) const { lo[c] = (lower_from(q) + drift_[c]) * (1.0 - 2e-15); }

    void first_pass(const float* x, int tokens, int d, const float* centroids, int k, int* assign) {
        for (int c = 0; c < k; ++c) which_[c] = c;  // every centroid is a candidate
        for (int t = 0; t < tokens; ++t) {
            float* q = q_.data();
            distances(x + static_cast<std::ptrdiff_t>(t) * d, centroids, which_.data(), k, d, q);
            double* lo = lower_.data() + static_cast<std::ptrdiff_t>(t) * k;
            int best = 0;
            for (int c = 0; c < k; ++c) {
                store_lower(lo, c, q[c]);
                if (q[c] < q[best]) best = c;  // core's scan: the lowest index among equals
            }
            assign[t] = best;
            upper_[t] = upper_from(q[best]);
            store_others(lo, t, best, k);
        }
    }

    // Distance between two float vectors in float, eight partial sums (so it vectorizes); with at
    // most 64 terms per partial sum its relative error is below 5e-6, covered by the factors 1e-5
    // with which the callers round it to a bound.
    static double float_distance(const float* a, const float* b, int d) {
        float part[8] = {};
        int j = 0;
        for (; j + 8 <= d; j += 8)
            for (int l = 0; l < 8; ++l) {
                const float t = a[j + l] - b[j + l];
                part[l] += t * t;
            }
        for (; j < d; ++j) part[0] += (a[j] - b[j]) * (a[j] - b[j]);
        float s = 0.0f;
        for (float p : part) s += p;
        return std::sqrt(static_cast<double>(s));
    }

    // How far each centroid moved since the last call (upper bound, accumulated in drift_) and the
    // pairwise centroid distances (lower bounds).
    void track_centroids(const float* centroids, int k, int d) {
        double largest = 0.0;
        for (int c = 0; c < k; ++c) {
            moved_[c] = float_distance(centroids + c * d, previous_.data() + c * d, d) * (1.0 + 1e-5) + 1e-18;
            drift_[c] += moved_[c];
            largest = std::max(largest, moved_[c]);
        }
        max_drift_ += largest;
        for (int a = 0; a < k; ++a) {
            closest_other_[a] = HUGE_VAL;
            for (int c = 0; c < k; ++c) {
                if (c == a) continue;
                const double s = c < a ? between_[static_cast<std::size_t>(c) * k + a]
                                       : float_distance(centroids + a * d, centroids + c * d, d) * (1.0 - 1e-5);
                between_[static_cast<std::size_t>(a) * k + c] = s;
                closest_other_[a] = std::min(closest_other_[a], s);
            }
        }
    }

    // Current lower bound on D(x_t, c) from a stored one: stored - drift_[c], rounded down (the
    // difference errs by at most 2 ulp of the stored value).
    double current_lower(const double* lo, int c) const { return lo[c] - drift_[c] * slack - 1e-15 * lo[c]; }

    // Lower bound on the distance from x_t to every centroid but `best`, stored like lower_ but
    // against max_drift_ (no centroid drifted more).
    void store_others(const double* lo, int t, int best, int k) {
        double m = HUGE_VAL;
        for (int c = 0; c < k; ++c) {
            const double l = c == best ? HUGE_VAL : current_lower(lo, c);
            m = l < m ? l : m;
        }
        others_[t] = (std::max(m, 0.0) + max_drift_) * (1.0 - 2e-15);
    }

    // True when no centroid other than a can be within reach r of x_t (up bounds D(x_t, c_a)).
    bool none_closer(int t, int a, double up, double r) const {
        return others_[t] > (r + max_drift_) * slack || closest_other_[a] > (up + r) * slack;
    }

    // D(x, c) >= lower bound of c, and D(x, c) >= D(c_a, c) - D(x, c_a) (triangle inequality).
    void reassign(const float* row, int t, int d, const float* centroids, int k, int& assigned) {
        const int a = assigned;
        double up = upper_[t] + moved_[a];
        if (!none_closer(t, a, up, reach(up))) {
            const float qa = distance(row, centroids, a, d);
            up = upper_from(qa);
            const double r = reach(up);
            if (!none_closer(t, a, up, r)) return evaluate(row, t, d, centroids, k, assigned, qa, up, r);
        }
        upper_[t] = up;
    }

    // Evaluates the centroids the bounds cannot prune and picks the winner as core's scan does.
    // qa: computed square distance to the assigned centroid, up and r its bound and reach.
    void evaluate(const float* row, int t, int d, const float* centroids, int k, int& assigned, float qa, double up, double r) {
        double* lo = lower_.data() + static_cast<std::ptrdiff_t>(t) * k;
        const int a = assigned;
        const double* from_a = between_.data() + static_cast<std::size_t>(a) * k;
        const double far = (up + r) * slack;
        int n = 0;
        for (int c0 = 0; c0 < k; c0 += 64) {
            // A mask first: the tests are independent (no chain through n), and branch-free.
            const int c1 = std::min(k, c0 + 64);
            std::uint64_t m = 0;
            for (int c = c0; c < c1; ++c)
                m |= static_cast<std::uint64_t>((lo[c] <= (r + drift_[c]) * slack) & (from_a[c] <= far)) << (c - c0);
            for (; m != 0; m &= m - 1)
                if (const int c = c0 + std::countr_zero(m); c != a) which_[n++] = c;
        }
        float* q = q_.data();
        distances(row, centroids, which_.data(), n, d, q);
        int best = a;
        float best_q = qa;
        for (int i = 0; i < n; ++i) {
            const int c = which_[i];
            store_lower(lo, c, q[i]);
            if (q[i] < best_q || (q[i] == best_q && c < best)) {  // core's scan: the lowest index among equals
                best = c;
                best_q = q[i];
            }
        }
        if (best != a) store_lower(lo, a, qa);
        upper_[t] = upper_from(best_q);
        store_others(lo, t, best, k);
        assigned = best;
    }

    std::vector<double> lower_;          // [tokens][k] lower bound on D(x_t, c) + drift_[c] when stored
    std::vector<double> upper_;          // [tokens] upper bound on D(x_t, c_assigned)
    std::vector<double> others_;         // [tokens] lower bound on D(x_t, c), c != assigned, + max_drift_
    std::vector<float> previous_;        // [k][d] centroids of the previous call
    std::vector<double> moved_, drift_;  // [k] movement in the last call, and in all calls
    std::vector<double> between_;        // [k][k] lower bounds on D(c_a, c)
    std::vector<double> closest_other_;  // [k] min over c != a of between_[a][c]
    std::vector<int> which_;             // [k] the centroids a token's distances are evaluated to
    std::vector<float> q_;               // [k] squared distances of the candidates
    double max_drift_ = 0.0;             // sum over calls of the largest movement
    std::int64_t evaluated_ = 0;
    bool started_ = false;
};

}  // namespace patternkv

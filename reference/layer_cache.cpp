// layer_cache on the CPU: construction, prefill (k-means + page quantization), append and flush.
#include <algorithm>
#include <cstring>

#include <fmt/format.h>
#include <tbb/parallel_for.h>

#include <patternkv/error.hpp>
#include <patternkv/layer_cache.hpp>

#include "core/attention.hpp"
#include "core/fp16.hpp"
#include "input_reader.hpp"
#include "layer_cache_state.hpp"

namespace patternkv {
namespace {

std::variant<kmeans_miner, no_pattern_miner> make_miner(const config& c) {
    if (c.num_patterns == 0) return no_pattern_miner{};
    return kmeans_miner{c.num_patterns, c.kmeans_iterations, c.kmeans_tolerance, c.seed, c.grow_patterns};
}

std::variant<z_test_gate, always_gate, never_gate> make_gate(const config& c) {
    switch (c.gate) {
    case gate_mode::z_test: return z_test_gate(c.gate_alpha, c.head_dim);
    case gate_mode::always: return always_gate{};
    case gate_mode::never: return never_gate{};
    }
    throw error("invalid config: gate");
}

core::page_geometry make_geometry(const config& c) {
    const bool per_channel = c.k_mode == k_quant_mode::per_channel;
    return {c.head_dim, c.residual_length, c.k_bits, c.v_bits, per_channel,
            per_channel ? c.k_group : c.k_token_group_size(), c.v_group_size(), c.num_patterns > 0};
}

template <class T>
void reserve_zeroed(std::vector<T>& v, std::size_t n) { v.assign(n, T{}); }

void check_seq(const layer_cache_state& s, const char* what, int seq) {
    if (seq < 0 || seq >= s.batch)
        throw error(fmt::format("{}: sequence index {} out of range [0, {})", what, seq, s.batch));
}

void set_gate_bit(std::uint32_t* gate, int t, bool on) {
    const std::uint32_t bit = 1u << (t & 31);
    gate[t >> 5] = on ? (gate[t >> 5] | bit) : (gate[t >> 5] & ~bit);
}

void half_rows_to_float(const std::uint16_t* x, std::size_t n, float* out) {
    for (std::size_t i = 0; i < n; ++i) out[i] = core::half_to_float(x[i]);
}

} // namespace

core::head_pages layer_cache_state::head(int seq, int h) const {
    const std::size_t p0 = sh(seq, h) * static_cast<std::size_t>(max_pages);
    return {geom,
            k_codes.data() + p0 * geom.k_code_words(),
            k_sm.data() + p0 * geom.k_groups(),
            k_index.data() + p0 * geom.index_bytes(),
            v_codes.data() + p0 * geom.v_code_words(),
            v_sm.data() + p0 * geom.v_groups(),
            v_index.data() + p0 * geom.index_bytes(),
            v_gate.data() + p0 * geom.gate_words()};
}

core::page_ref layer_cache_state::page_mut(int seq, int h, int page) {
    const std::size_t p = sh(seq, h) * static_cast<std::size_t>(max_pages) + page;
    return {k_codes.data() + p * geom.k_code_words(), k_sm.data() + p * geom.k_groups(),
            k_index.data() + p * geom.index_bytes(),  v_codes.data() + p * geom.v_code_words(),
            v_sm.data() + p * geom.v_groups(),         v_index.data() + p * geom.index_bytes(),
            v_gate.data() + p * geom.gate_words()};
}

void encode_pages(layer_cache_state& s, bool v, int seq, int h, const std::uint16_t* x, int first, int count, bool flush) {
    const int d = s.d(), R = s.geom.tokens;
    const int nb = v ? s.v_bank_size[s.sh(seq, h)] : s.k_bank_size[s.sh(seq, h)];
    std::vector<float>& buf = s.scratch(static_cast<std::size_t>(2 * R * d + s.bank_capacity * d));
    float* rows = buf.data();
    float* resid = rows + R * d;
    float* bank = resid + R * d;
    half_rows_to_float(s.bank(v, seq, h), static_cast<std::size_t>(nb) * d, bank);
    const std::span<const float> bank_span(bank, static_cast<std::size_t>(nb) * d);
    for (int p = 0; p < count; ++p) {
        half_rows_to_float(x + static_cast<std::size_t>(p) * R * d, static_cast<std::size_t>(R) * d, rows);
        const core::page_ref page = s.page_mut(seq, h, first + p);
        for (int t = 0; t < R; ++t) {
            const float* row = rows + t * d;
            float* out = resid + t * d;
            std::copy(row, row + d, out);
            if (!s.has_patterns()) continue;
            const std::span<const float> xs(row, d);
            int a = 0;
            bool residual = false;
            if (nb > 0) {
                const auto align = [&](const auto& q) {
                    return flush ? q.align_flush(xs, bank_span, nb) : q.align_prefill(xs, bank_span, nb);
                };
                a = v ? align(s.v_quantizer) : std::visit(align, s.k_quantizer);
                const std::span<const float> m(bank + a * d, d);
                residual = !v || std::visit([&](const auto& g) { return g.residualize(xs, m); }, s.gate);
                if (residual)
                    for (int j = 0; j < d; ++j) out[j] = row[j] - m[j];
            }
            (v ? page.v_index : page.k_index)[t] = static_cast<std::uint8_t>(a);
            if (v) set_gate_bit(page.v_gate, t, residual);
        }
        const std::span<const float> rs(resid, static_cast<std::size_t>(R) * d);
        auto* sm = reinterpret_cast<std::uint16_t*>(v ? page.v_sm : page.k_sm);
        if (v) {
            s.v_quantizer.quantize(rs, {page.v_codes, static_cast<std::size_t>(s.geom.v_code_words())},
                                   {sm, 2 * static_cast<std::size_t>(s.geom.v_groups())});
        } else {
            std::visit([&](const auto& q) {
                q.quantize(rs, {page.k_codes, static_cast<std::size_t>(s.geom.k_code_words())},
                           {sm, 2 * static_cast<std::size_t>(s.geom.k_groups())});
            }, s.k_quantizer);
        }
    }
}

namespace {

// Mines the bank of (seq, h) for K or V from T fp16 rows.
void mine_bank(layer_cache_state& s, bool v, int seq, int h, const std::uint16_t* x, int T) {
    const int d = s.d();
    std::vector<float> rows(static_cast<std::size_t>(T) * d), bank(static_cast<std::size_t>(s.bank_capacity) * d);
    half_rows_to_float(x, rows.size(), rows.data());
    const int n = std::visit([&](const auto& m) { return m.mine(rows, d, h, v, bank); }, s.miner);
    std::uint16_t* dst = s.bank(v, seq, h);
    for (std::size_t i = 0; i < static_cast<std::size_t>(n) * d; ++i) dst[i] = core::float_to_half(bank[i]);
    (v ? s.v_bank_size : s.k_bank_size)[s.sh(seq, h)] = n;
}

// Flush of one (seq, head) for K or V: Chebyshev centre into the bank, then the window becomes a page.
void flush_head(layer_cache_state& s, bool v, int seq, int h) {
    const int d = s.d(), R = s.geom.tokens;
    const std::uint16_t* w = s.window(v, seq, h);
    if (s.has_patterns()) {
        int& nb = (v ? s.v_bank_size : s.k_bank_size)[s.sh(seq, h)];
        if (nb < s.bank_capacity) {
            std::vector<float>& buf = s.scratch(static_cast<std::size_t>(R * d + d));
            half_rows_to_float(w, static_cast<std::size_t>(R) * d, buf.data());
            float* centre = buf.data() + R * d;
            const bool add = std::visit(
                [&](const auto& m) { return m.propose({buf.data(), static_cast<std::size_t>(R) * d}, d, {centre, static_cast<std::size_t>(d)}); },
                s.miner);
            if (add) {
                std::uint16_t* dst = s.bank(v, seq, h) + static_cast<std::size_t>(nb) * d;
                for (int j = 0; j < d; ++j) dst[j] = core::float_to_half(centre[j]);
                ++nb;
            }
        }
    }
    encode_pages(s, v, seq, h, w, s.pages[seq], 1, true);
}

} // namespace

layer_cache::layer_cache(const config& cfg, int batch, std::int64_t max_tokens) : state_(std::make_unique<layer_cache_state>()) {
    cfg.validate();
    if (batch < 1) throw error(fmt::format("layer_cache: batch = {} must be >= 1", batch));
    if (max_tokens < 1 || max_tokens > (std::int64_t{1} << 31) - 1)
        throw error(fmt::format("layer_cache: max_tokens = {} must be in [1, 2^31 - 1]", max_tokens));
    layer_cache_state& s = *state_;
    s.cfg = cfg;
    s.batch = batch;
    s.max_tokens = max_tokens;
    s.geom = make_geometry(cfg);
    s.max_pages = static_cast<int>((max_tokens + cfg.residual_length - 1) / cfg.residual_length);
    s.bank_capacity = cfg.num_patterns > 0 ? cfg.max_patterns : 0;
    s.miner = make_miner(cfg);
    s.gate = make_gate(cfg);
    if (s.geom.k_per_channel) s.k_quantizer = channel_quantizer{s.d(), s.geom.tokens, cfg.k_bits, s.geom.k_group};
    else s.k_quantizer = token_quantizer{s.d(), s.geom.tokens, cfg.k_bits, s.geom.k_group};
    s.v_quantizer = token_quantizer{s.d(), s.geom.tokens, cfg.v_bits, s.geom.v_group};

    const std::size_t heads = static_cast<std::size_t>(batch) * s.heads(), pages = heads * s.max_pages;
    reserve_zeroed(s.k_codes, pages * s.geom.k_code_words());
    reserve_zeroed(s.v_codes, pages * s.geom.v_code_words());
    reserve_zeroed(s.v_gate, pages * s.geom.gate_words());
    reserve_zeroed(s.k_sm, pages * s.geom.k_groups());
    reserve_zeroed(s.v_sm, pages * s.geom.v_groups());
    reserve_zeroed(s.k_index, pages * s.geom.index_bytes());
    reserve_zeroed(s.v_index, pages * s.geom.index_bytes());
    reserve_zeroed(s.k_bank, heads * s.bank_capacity * s.d());
    reserve_zeroed(s.v_bank, heads * s.bank_capacity * s.d());
    reserve_zeroed(s.k_bank_size, heads);
    reserve_zeroed(s.v_bank_size, heads);
    reserve_zeroed(s.window_k, heads * s.geom.tokens * s.d());
    reserve_zeroed(s.window_v, heads * s.geom.tokens * s.d());
    reserve_zeroed(s.pages, static_cast<std::size_t>(batch));
    reserve_zeroed(s.window_count, static_cast<std::size_t>(batch));
    for (int i = 0; i < batch; ++i) s.all_seqs.push_back(i);
    const std::size_t q_elems = static_cast<std::size_t>(batch) * cfg.num_q_heads;
    s.q_in.resize(q_elems * s.d());
    s.q_tau.resize(q_elems * s.d());
    s.qm.resize(q_elems * s.bank_capacity);
    s.partials.resize(q_elems * s.max_splits() * core::partial_stride(s.d(), s.bank_capacity));
    s.in_k.reserve(static_cast<std::size_t>(batch) * s.heads() * s.d());
    s.in_v.reserve(static_cast<std::size_t>(batch) * s.heads() * s.d());
}

layer_cache::~layer_cache() = default;
layer_cache::layer_cache(layer_cache&&) noexcept = default;
layer_cache& layer_cache::operator=(layer_cache&&) noexcept = default;

void layer_cache::prefill(int seq, const_tensor_view k, const_tensor_view v) {
    layer_cache_state& s = *state_;
    check_seq(s, "prefill", seq);
    if (s.tokens(seq) != 0)
        throw error(fmt::format("prefill: sequence {} already holds {} tokens; reset() it first", seq, s.tokens(seq)));
    const std::int64_t T = k.shape[0];
    if (T < 0 || T > s.max_tokens)
        throw error(fmt::format("prefill: {} tokens exceed the capacity max_tokens = {}", T, s.max_tokens));
    detail::check_shape("prefill k", k, T, s.heads(), s.d());
    detail::check_shape("prefill v", v, T, s.heads(), s.d());
    if (T == 0) return;
    std::vector<std::uint16_t> xk, xv;  // prefill is not the allocation-free path
    detail::to_cache_half("prefill k", k, xk);
    detail::to_cache_half("prefill v", v, xv);

    const int R = s.geom.tokens, full = static_cast<int>(T / R), rest = static_cast<int>(T % R), t = static_cast<int>(T);
    tbb::parallel_for(0, 2 * s.heads(), [&](int task) {
        const bool isv = task % 2 == 1;
        const int h = task / 2;
        const std::uint16_t* x = (isv ? xv : xk).data() + static_cast<std::size_t>(h) * t * s.d();
        if (s.has_patterns()) mine_bank(s, isv, seq, h, x, t);
        encode_pages(s, isv, seq, h, x, 0, full, false);
        std::copy(x + static_cast<std::size_t>(full) * R * s.d(), x + static_cast<std::size_t>(t) * s.d(), s.window(isv, seq, h));
    });
    s.pages[seq] = full;
    s.window_count[seq] = rest;
}

void layer_cache::append(std::span<const int> seqs, const_tensor_view k, const_tensor_view v) {
    layer_cache_state& s = *state_;
    const auto n = static_cast<std::int64_t>(seqs.size());
    detail::check_shape("append k", k, n, s.heads(), s.d());
    detail::check_shape("append v", v, n, s.heads(), s.d());
    for (std::int64_t i = 0; i < n; ++i) {
        check_seq(s, "append", seqs[i]);
        for (std::int64_t j = 0; j < i; ++j)
            if (seqs[j] == seqs[i]) throw error(fmt::format("append: sequence {} listed twice", seqs[i]));
        if (s.tokens(seqs[i]) >= s.max_tokens)
            throw error(fmt::format("append: sequence {} is full (max_tokens = {})", seqs[i], s.max_tokens));
    }
    detail::to_cache_half("append k", k, s.in_k);
    detail::to_cache_half("append v", v, s.in_v);

    const int d = s.d(), R = s.geom.tokens;
    bool any_full = false;
    for (std::int64_t i = 0; i < n; ++i) {
        const int seq = seqs[i], w = s.window_count[seq];
        for (int h = 0; h < s.heads(); ++h) {
            const std::size_t src = (static_cast<std::size_t>(h) * n + i) * d;
            std::copy_n(s.in_k.data() + src, d, s.window(false, seq, h) + static_cast<std::size_t>(w) * d);
            std::copy_n(s.in_v.data() + src, d, s.window(true, seq, h) + static_cast<std::size_t>(w) * d);
        }
        any_full |= ++s.window_count[seq] == R;
    }
    if (!any_full) return;
    tbb::parallel_for(std::int64_t{0}, n * s.heads() * 2, [&](std::int64_t task) {
        const int seq = seqs[task / (2 * s.heads())];
        if (s.window_count[seq] == R) flush_head(s, task % 2 == 1, seq, static_cast<int>(task / 2 % s.heads()));
    });
    for (std::int64_t i = 0; i < n; ++i) {
        if (s.window_count[seqs[i]] != R) continue;
        ++s.pages[seqs[i]];
        s.window_count[seqs[i]] = 0;
    }
}

void layer_cache::append(const_tensor_view k, const_tensor_view v) {
    append(state_->all_seqs, k, v);
}

void layer_cache::reset(int seq) {
    layer_cache_state& s = *state_;
    check_seq(s, "reset", seq);
    s.pages[seq] = 0;
    s.window_count[seq] = 0;
    for (int h = 0; h < s.heads(); ++h) s.k_bank_size[s.sh(seq, h)] = s.v_bank_size[s.sh(seq, h)] = 0;
}

std::int64_t layer_cache::size(int seq) const {
    check_seq(*state_, "size", seq);
    return state_->tokens(seq);
}

std::int64_t layer_cache::quantized_size(int seq) const {
    check_seq(*state_, "quantized_size", seq);
    return static_cast<std::int64_t>(state_->pages[seq]) * state_->geom.tokens;
}

int layer_cache::bank_size(int seq, int kv_head, bool v) const {
    check_seq(*state_, "bank_size", seq);
    if (kv_head < 0 || kv_head >= state_->heads())
        throw error(fmt::format("bank_size: kv_head {} out of range [0, {})", kv_head, state_->heads()));
    return (v ? state_->v_bank_size : state_->k_bank_size)[state_->sh(seq, kv_head)];
}

int layer_cache::batch() const { return state_->batch; }
std::int64_t layer_cache::max_tokens() const { return state_->max_tokens; }
const config& layer_cache::cfg() const { return state_->cfg; }

memory_report layer_cache::memory() const {
    const layer_cache_state& s = *state_;
    const core::page_geometry& g = s.geom;
    memory_report r;
    for (int seq = 0; seq < s.batch; ++seq) {
        const std::uint64_t pages = static_cast<std::uint64_t>(s.pages[seq]) * s.heads();
        r.code_bytes += pages * 4 * (g.k_code_words() + g.v_code_words());
        r.scale_min_bytes += pages * sizeof(core::scale_min) * (g.k_groups() + g.v_groups());
        r.pattern_index_bytes += pages * 2 * g.index_bytes();
        r.gate_bytes += pages * 4 * g.gate_words();
        for (int h = 0; h < s.heads(); ++h)
            r.bank_bytes += 2ull * s.d() * (s.k_bank_size[s.sh(seq, h)] + s.v_bank_size[s.sh(seq, h)]);
        r.window_bytes += 2ull * 2 * s.window_count[seq] * s.heads() * s.d();
        r.quantized_tokens += static_cast<std::uint64_t>(s.pages[seq]) * g.tokens;
        r.window_tokens += static_cast<std::uint64_t>(s.window_count[seq]);
    }
    r.elements = (r.quantized_tokens + r.window_tokens) * s.heads() * s.d() * 2;
    return r;
}

} // namespace patternkv

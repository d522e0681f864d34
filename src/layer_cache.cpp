// layer_cache: construction, validation and conversion of every input, then dispatch to the
// backend (cache_backend.hpp); the sequence counters are kept here, identically for every backend.
#include <algorithm>
#include <cstring>
#include <initializer_list>
#include <limits>

#include <fmt/format.h>
#include <tbb/parallel_for.h>

#include <patternkv/error.hpp>
#include <patternkv/layer_cache.hpp>

#include "core/attention.hpp"
#include "cache_backend.hpp"
#include "input_reader.hpp"
#include "layer_cache_state.hpp"

namespace patternkv {
namespace {

std::variant<kmeans_miner, no_pattern_miner, any_miner> make_miner(const config& c) {
    if (c.num_patterns == 0) return no_pattern_miner{};
    return kmeans_miner{c.num_patterns, c.kmeans_iterations, c.kmeans_tolerance, c.seed, c.grow_patterns, c.tokens_per_pattern};
}

std::variant<z_test_gate, always_gate, never_gate, any_gate> make_gate(const config& c) {
    switch (c.gate) {
        case gate_mode::z_test:
            return z_test_gate(c.gate_alpha, c.head_dim);
        case gate_mode::always:
            return always_gate{};
        case gate_mode::never:
            return never_gate{};
    }
    throw error("invalid config: gate");
}

template <class T>
void reserve_zeroed(std::vector<T>& v, std::size_t n) {
    v.assign(n, T{});
}

}  // namespace

void layer_cache_state::allocate_host_arrays() {
    if (host_arrays) return;
    each_data_array(*this, [](auto& array, std::int64_t elements) { reserve_zeroed(array, static_cast<std::size_t>(elements)); });
    host_arrays = true;
}

void layer_cache_state::release_host_arrays() {
    each_data_array(*this, [](auto& array, std::int64_t) { array = {}; });
    host_arrays = false;
}

void layer_cache_state::check_pool(const char* what, std::int64_t n) const {
    if (n > static_cast<std::int64_t>(free_pages.size()))
        throw error(
            fmt::format("{}: the page pool is exhausted: {} new page{} needed, {} of {} pages free (reset() finished "
                        "sequences, or give the cache a larger cache_capacity::pool_pages)",
                        what, n, n == 1 ? "" : "s", free_pages.size(), pool_pages));
}

namespace {

void check_seq(const layer_cache_state& s, const char* what, int seq) {
    if (seq < 0 || seq >= s.batch) throw error(fmt::format("{}: sequence index {} out of range [0, {})", what, seq, s.batch));
}

}  // namespace

core::page_geometry geometry_of(const config& c) {
    const bool per_channel = c.k_mode == k_quant_mode::per_channel;
    return {c.head_dim,       c.residual_length,
            c.k_bits,         c.v_bits,
            per_channel,      per_channel ? c.k_group : c.k_token_group_size(),
            c.v_group_size(), c.num_patterns > 0,
            c.k_patterns,     core::index_bits_for(c.bank_capacity()),
            c.sink_tokens};
}

layer_cache::layer_cache(const config& cfg, int batch, std::int64_t max_tokens, backend where)
    : layer_cache(cfg, cache_capacity{batch, max_tokens, 0}, where) {}

core::cache_layout layout_of(const config& c, const cache_capacity& capacity) {
    const int batch = capacity.slots;
    const std::int64_t max_tokens = capacity.max_tokens;
    if (batch < 1) throw error(fmt::format("layer_cache: batch = {} must be >= 1", batch));
    if (max_tokens < 1 || max_tokens > (std::int64_t{1} << 31) - 1)
        throw error(fmt::format("layer_cache: max_tokens = {} must be in [1, 2^31 - 1]", max_tokens));
    const std::int64_t max_pages = (max_tokens + c.residual_length - 1) / c.residual_length;
    const std::int64_t pool = capacity.pool_pages == 0 ? max_pages * batch : capacity.pool_pages;
    if (pool < 1 || pool > std::numeric_limits<std::int32_t>::max())
        throw error(fmt::format("layer_cache: a pool of {} pages{} must hold 1 .. 2^31 - 1 pages", pool,
                                capacity.pool_pages == 0 ? fmt::format(" ({} slots x {} pages of max_tokens)", batch, max_pages) : ""));
    return {geometry_of(c), c.num_kv_heads, static_cast<int>(max_pages), static_cast<std::int32_t>(pool), c.bank_capacity()};
}

layer_cache::layer_cache(const config& cfg, const cache_capacity& capacity, backend where) : state_(std::make_unique<layer_cache_state>()) {
    cfg.validate();
    const core::cache_layout layout = layout_of(cfg, capacity);
    layer_cache_state& s = *state_;
    const int batch = capacity.slots;
    s.cfg = cfg;
    s.batch = batch;
    s.max_tokens = capacity.max_tokens;
    s.geom = layout.g;
    s.max_pages = layout.max_pages;
    s.pool_pages = layout.pool_pages;
    s.bank_capacity = layout.bank_capacity;
    s.miner = make_miner(cfg);
    s.gate = make_gate(cfg);
    if (s.geom.k_per_channel)
        s.k_quantizer = channel_quantizer{s.d(), s.geom.tokens, cfg.k_bits, s.geom.k_group};
    else
        s.k_quantizer = token_quantizer{s.d(), s.geom.tokens, cfg.k_bits, s.geom.k_group};
    s.v_quantizer = token_quantizer{s.d(), s.geom.tokens, cfg.v_bits, s.geom.v_group};

    // Refuse shapes whose reservation would overflow the size computations below (they would
    // wrap to small arrays that later calls overrun) or cannot be addressed.
    if (const long double reserve_bytes = layout.reserved_bytes(batch, cfg.num_q_heads); reserve_bytes > 0x1p62L)
        throw error(
            fmt::format("layer_cache: batch = {}, num_kv_heads = {}, max_tokens = {}, pool_pages = {} would reserve about {:.3g} bytes",
                        batch, s.heads(), s.max_tokens, s.pool_pages, static_cast<double>(reserve_bytes)));
    const core::cache_sizes n = layout.sizes(batch);
    const auto size = [](std::int64_t e) { return static_cast<std::size_t>(e); };
    if (where == backend::cpu) s.allocate_host_arrays();  // a GPU cache's data lives on its device only
    reserve_zeroed(s.k_bank_size, size(n.heads));
    reserve_zeroed(s.v_bank_size, size(n.heads));
    s.block_table.assign(size(n.block_table), -1);
    s.free_pages.resize(static_cast<std::size_t>(s.pool_pages));
    for (std::int32_t i = 0; i < s.pool_pages; ++i) s.free_pages[static_cast<std::size_t>(i)] = s.pool_pages - 1 - i;  // slot 0 first
    reserve_zeroed(s.plan.flush_seq, static_cast<std::size_t>(batch));
    reserve_zeroed(s.plan.may_grow, static_cast<std::size_t>(batch) * 2 * s.heads());
    reserve_zeroed(s.pages, static_cast<std::size_t>(batch));
    reserve_zeroed(s.window_count, static_cast<std::size_t>(batch));
    for (int i = 0; i < batch; ++i) s.all_seqs.push_back(i);
    const std::size_t q_elems = static_cast<std::size_t>(batch) * cfg.num_q_heads;
    s.q_in.resize(q_elems * s.d());
    if (where == backend::cpu) {  // the CPU kernels' attention scratch
        s.q_tau.resize(q_elems * s.d());
        s.qm.resize(q_elems * s.bank_capacity);
        s.partials.resize(q_elems * s.max_splits() * core::partial_stride(s.d(), s.bank_capacity));
    }
    s.in_k.reserve(static_cast<std::size_t>(batch) * s.heads() * s.d());
    s.in_v.reserve(static_cast<std::size_t>(batch) * s.heads() * s.d());
    s.out.resize(q_elems * s.d());
    s.impl = make_backend(where, s);
    s.reserve_thread_scratch();
}

namespace {
backend cpu_only(backend where) {
    if (where != backend::cpu)
        throw error(
            fmt::format("layer_cache: user policies run on the CPU backend only; the {} backend's kernels are compiled "
                        "with the library's own miner and gate (docs/embedding.md)",
                        backend_name(where)));
    return where;
}
}  // namespace

layer_cache::layer_cache(const config& cfg, int batch, std::int64_t max_tokens, const user_policies& policies, backend where)
    : layer_cache(cfg, cache_capacity{batch, max_tokens, 0}, policies, where) {}

layer_cache::layer_cache(const config& cfg, const cache_capacity& capacity, const user_policies& policies, backend where)
    : layer_cache(cfg, capacity, cpu_only(where)) {
    if ((policies.miner || policies.gate) && cfg.num_patterns == 0)
        throw error("layer_cache: user policies given, but config::num_patterns = 0 (a cache without patterns mines and gates nothing)");
    layer_cache_state& s = *state_;
    if (policies.miner) s.miner = *policies.miner;
    if (policies.gate) s.gate = *policies.gate;
    s.user_code = policies.miner.has_value() || policies.gate.has_value();
    if (s.user_code) {
        s.undo_k_bank_size.resize(s.k_bank_size.size());
        s.undo_v_bank_size.resize(s.v_bank_size.size());
    }
}

layer_cache::~layer_cache() = default;
layer_cache::layer_cache(layer_cache&&) noexcept = default;
layer_cache& layer_cache::operator=(layer_cache&&) noexcept = default;

namespace {

/// Whether the views of a call are all in device memory (true) or all in host memory (false);
/// throws for a mix, and for device views on a backend that cannot read them.
bool device_call(const layer_cache_state& s, const char* what, std::initializer_list<memory_space> spaces) {
    const auto n = std::count(spaces.begin(), spaces.end(), memory_space::device);
    if (n == 0) return false;
    if (n != static_cast<std::ptrdiff_t>(spaces.size()))
        throw error(fmt::format("{}: views in host and device memory in one call (all of a call's views must be in one space)", what));
    if (!s.impl->device_views())
        throw error(fmt::format("{}: device views need a GPU backend; this cache runs on {}", what, backend_name(s.impl->kind())));
    return true;
}

}  // namespace

void layer_cache::prefill(int seq, const_tensor_view k, const_tensor_view v) {
    layer_cache_state& s = *state_;
    check_seq(s, "prefill", seq);
    if (s.tokens(seq) != 0) throw error(fmt::format("prefill: sequence {} already holds {} tokens; reset() it first", seq, s.tokens(seq)));
    const std::int64_t T = k.shape[0];
    if (T < 0 || T > s.max_tokens) throw error(fmt::format("prefill: {} tokens exceed the capacity max_tokens = {}", T, s.max_tokens));
    detail::check_shape("prefill k", k, T, s.heads(), s.d());
    detail::check_shape("prefill v", v, T, s.heads(), s.d());
    const bool device = device_call(s, "prefill", {k.space, v.space});
    if (T == 0) return;
    std::vector<std::uint16_t> xk, xv;  // prefill is not the allocation-free path
    if (!device) {
        detail::to_cache_half("prefill k", k, xk);
        detail::to_cache_half("prefill v", v, xv);
    }
    const int pages = s.plan_prefill(seq, T);
    s.reserve_thread_scratch();
    try {
        if (device)
            s.impl->prefill_device(s, seq, k, v, static_cast<int>(T));
        else
            s.impl->prefill(s, seq, xk.data(), xv.data(), static_cast<int>(T));
    } catch (...) {  // a user miner or gate, or a launch, failed: the sequence stays empty, as it was
        s.release(seq, pages);
        throw;
    }
    s.commit_prefill(seq, T);
}

void layer_cache::append(std::span<const int> seqs, const_tensor_view k, const_tensor_view v) {
    layer_cache_state& s = *state_;
    const auto n = static_cast<std::int64_t>(seqs.size());
    detail::check_shape("append k", k, n, s.heads(), s.d());
    detail::check_shape("append v", v, n, s.heads(), s.d());
    const bool device = device_call(s, "append", {k.space, v.space});
    for (std::int64_t i = 0; i < n; ++i) {
        check_seq(s, "append", seqs[i]);
        for (std::int64_t j = 0; j < i; ++j)
            if (seqs[j] == seqs[i]) throw error(fmt::format("append: sequence {} listed twice", seqs[i]));
        if (s.tokens(seqs[i]) >= s.max_tokens)
            throw error(fmt::format("append: sequence {} is full (max_tokens = {})", seqs[i], s.max_tokens));
    }
    if (!device) {
        detail::to_cache_half("append k", k, s.in_k);
        detail::to_cache_half("append v", v, s.in_v);
    }

    s.plan_append(seqs);
    s.reserve_thread_scratch();
    if (s.user_code) {                       // user code may throw during a flush: its banks go back to their sizes before it
        s.undo_k_bank_size = s.k_bank_size;  // same size: no allocation
        s.undo_v_bank_size = s.v_bank_size;
    }
    try {
        if (device)
            s.impl->append_device(s, seqs, k, v);
        else
            s.impl->append(s, seqs, s.in_k.data(), s.in_v.data());
    } catch (...) {
        s.drop_plan();
        if (s.user_code) {
            s.k_bank_size = s.undo_k_bank_size;
            s.v_bank_size = s.undo_v_bank_size;
        }
        throw;
    }
    s.commit_append(seqs);  // the counters move only once the backend carried the plan out
}

void layer_cache::append(const_tensor_view k, const_tensor_view v) { append(state_->all_seqs, k, v); }

void layer_cache::attend(std::span<const int> seqs, const_tensor_view q, tensor_view out) const {
    const layer_cache_state& s = *state_;
    const auto n = static_cast<std::int64_t>(seqs.size());
    detail::check_shape("attend q", q, n, s.cfg.num_q_heads, s.d());
    detail::check_shape("attend out", out, n, s.cfg.num_q_heads, s.d());
    if (out.type != dtype::f32) throw error(fmt::format("attend out: dtype {} unsupported, out must be f32", dtype_name(out.type)));
    const bool device = device_call(s, "attend", {q.space, out.space});
    if (device && out.strides[2] != 1)
        throw error(fmt::format("attend out: a device view needs unit stride in its last dimension (has {})", out.strides[2]));
    for (std::int64_t i = 0; i < n; ++i) {
        check_seq(s, "attend", seqs[i]);
        for (std::int64_t j = 0; j < i; ++j)
            if (seqs[j] == seqs[i]) throw error(fmt::format("attend: sequence {} listed twice", seqs[i]));
        if (s.tokens(seqs[i]) == 0) throw error(fmt::format("attend: sequence {} holds no tokens (query for an empty cache)", seqs[i]));
    }
    if (device) return s.impl->attend_device(s, seqs, q, out);
    detail::to_finite_floats("attend q", q, s.q_in);
    s.reserve_thread_scratch();
    s.impl->attend(s, seqs, s.q_in.data(), s.out.data());
    float* dst = static_cast<float*>(out.data);
    for (std::int64_t i = 0; i < n; ++i)
        for (int h = 0; h < s.cfg.num_q_heads; ++h)
            for (int j = 0; j < s.d(); ++j)
                dst[out.offset(i, h, j)] = s.out[(static_cast<std::size_t>(i) * s.cfg.num_q_heads + h) * s.d() + j];
}

void layer_cache::attend(const_tensor_view q, tensor_view out) const { attend(state_->all_seqs, q, out); }

backend layer_cache::where() const { return state_->impl->kind(); }
void layer_cache::set_stream(void* stream) { state_->impl->set_stream(stream); }
void* layer_cache::stream() const { return state_->impl->stream(); }
void layer_cache::synchronize() const { state_->impl->synchronize(); }

void layer_cache::reset(int seq) {
    layer_cache_state& s = *state_;
    check_seq(s, "reset", seq);
    s.release(seq, s.pages[seq]);
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
std::int64_t layer_cache::pool_pages() const { return state_->pool_pages; }
std::int64_t layer_cache::free_pages() const { return static_cast<std::int64_t>(state_->free_pages.size()); }
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
        r.pattern_index_bytes += pages * (g.k_index_bytes() + g.v_index_bytes());
        r.gate_bytes += pages * 4 * g.gate_words();
        for (int h = 0; h < s.heads(); ++h) r.bank_bytes += 2ull * s.d() * (s.k_bank_size[s.sh(seq, h)] + s.v_bank_size[s.sh(seq, h)]);
        r.window_bytes += 2ull * 2 * s.window_count[seq] * s.heads() * s.d();
        r.quantized_tokens += static_cast<std::uint64_t>(s.pages[seq]) * g.tokens;
        r.window_tokens += static_cast<std::uint64_t>(s.window_count[seq]);
    }
    r.elements = (r.quantized_tokens + r.window_tokens) * s.heads() * s.d() * 2;
    r.pool_pages = static_cast<std::uint64_t>(s.pool_pages);
    r.pool_pages_used = r.pool_pages - s.free_pages.size();
    r.reserved_bytes = static_cast<std::uint64_t>(s.layout().reserved_bytes(s.batch, s.cfg.num_q_heads));
    return r;
}

}  // namespace patternkv

#pragma once
// Internal state of layer_cache, shared by every backend. History pages come from one pool shared
// by the sequences, through their block tables (core/cache_layout.hpp); the per-sequence arrays are
// indexed by sh = seq * H + head. Everything is allocated at construction. window_count counts the
// fp16 rows of a sequence, sink included (core::page_geometry::window_rows).
#include <algorithm>
#include <cstdint>
#include <memory>
#include <span>
#include <variant>
#include <vector>

#include <tbb/task_arena.h>

#include <patternkv/config.hpp>
#include <patternkv/layer_cache.hpp>
#include <patternkv/policies.hpp>

#include "cache_backend.hpp"
#include "core/attention.hpp"
#include "core/cache_layout.hpp"
#include "core/kmeans.hpp"
#include "core/page_layout.hpp"

namespace patternkv {

/// The page layout a config implies (host, device and file use this one definition).
core::page_geometry geometry_of(const config& c);
/// The storage of a cache of `c` with `capacity` (max_pages and the pool size resolved), for the
/// constructor and the file reader alike. Throws patternkv::error for a bad slot count, max_tokens
/// or pool size.
core::cache_layout layout_of(const config& c, const cache_capacity& capacity);

struct layer_cache_state {
    config cfg;
    int batch = 0;
    std::int64_t max_tokens = 0;
    int max_pages = 0;            ///< pages one sequence may hold (max_tokens)
    std::int32_t pool_pages = 0;  ///< pages in the shared pool
    int bank_capacity = 0;        ///< patterns reserved per bank (0 without patterns)
    core::page_geometry geom{};

    std::variant<kmeans_miner, no_pattern_miner, any_miner> miner;
    std::variant<z_test_gate, always_gate, never_gate, any_gate> gate{always_gate{}};
    std::variant<channel_quantizer, token_quantizer> k_quantizer;
    // The state machine of a sequence lives here, once: the cache plans each step (which pages a
    // prompt or a flush takes, who flushes, which bank may grow), a backend carries the plan out,
    // and the cache then commits the counters; a step that fails is undone here too.

    /// Plans the prefill of T tokens into empty `seq`: its whole pages (page_geometry::prompt_pages)
    /// are taken from the pool into its block table. Throws, changing nothing, when the pool is
    /// short. Returns the page count.
    int plan_prefill(int seq, std::int64_t T) {
        const int n = static_cast<int>(geom.prompt_pages(T));
        check_pool("prefill", n);
        take_pages(seq, 0, n);
        return n;
    }
    /// The counters of `seq` after its prefill of T tokens was carried out.
    void commit_prefill(int seq, std::int64_t T) {
        pages[seq] = static_cast<int>(geom.prompt_pages(T));
        window_count[seq] = static_cast<int>(T - static_cast<std::int64_t>(pages[seq]) * geom.tokens);
    }
    /// Empties `seq`, which holds `held` pages (pages[seq], or those a failed prefill took): its pages
    /// go back to the pool, its counters and bank sizes to zero.
    void release(int seq, int held) {
        give_back_pages(seq, 0, held);
        pages[seq] = window_count[seq] = 0;
        for (int h = 0; h < heads(); ++h) k_bank_size[sh(seq, h)] = v_bank_size[sh(seq, h)] = 0;
    }

    /// What the next append does, decided once by the cache (layer_cache::append) and carried out by a
    /// backend: which listed sequences flush their full window into a page (in list order; each
    /// flush's page is already in its block table), and for each such flush job, side and KV head
    /// whether the flush may add a pattern to that bank (bank_may_grow: the one growth rule; the
    /// miner may still decline). Sized at construction.
    struct append_plan {
        int jobs = 0;
        std::vector<int> flush_seq;          ///< [job]
        std::vector<std::uint8_t> may_grow;  ///< [job][K, V][head]
        static std::size_t at(int job, bool v, int h, int heads) { return (static_cast<std::size_t>(job) * 2 + v) * heads + h; }
        bool grows(int job, bool v, int h, int heads) const { return may_grow[at(job, v, h, heads)] != 0; }
    } plan;
    /// Plans an append to `seqs` from the one flush rule (page_geometry::window_full) and the one
    /// growth rule (bank_may_grow), and gives each flush its page from the pool. Throws, changing
    /// nothing, when the pool has too few free pages; drop_plan() undoes it.
    void plan_append(std::span<const int> seqs) {
        int flushes = 0;
        for (const int seq : seqs) flushes += geom.window_full(window_count[seq]) ? 1 : 0;
        check_pool("append", flushes);
        plan.jobs = 0;
        for (const int seq : seqs) {
            if (!geom.window_full(window_count[seq])) continue;
            const int job = plan.jobs++;
            plan.flush_seq[job] = seq;
            take_pages(seq, pages[seq], 1);
            for (const bool v : {false, true})
                for (int h = 0; h < heads(); ++h)
                    plan.may_grow[append_plan::at(job, v, h, heads())] =
                        bank_may_grow(v, (v ? v_bank_size : k_bank_size)[sh(seq, h)], pages[seq] + 1);
        }
    }
    /// The counters after the backend carried the plan out for `seqs`: a flushed sequence holds one
    /// more page, and every listed window one more row (after its flush, if any).
    void commit_append(std::span<const int> seqs) {
        for (int job = 0; job < plan.jobs; ++job) ++pages[plan.flush_seq[job]];
        for (const int seq : seqs) window_count[seq] = geom.next_row(window_count[seq]) + 1;
    }
    /// Returns the pages plan_append took (an append that failed).
    void drop_plan() {
        for (int job = plan.jobs - 1; job >= 0; --job) give_back_pages(plan.flush_seq[job], pages[plan.flush_seq[job]], 1);
        plan.jobs = 0;
    }

    /// Free pool slots, a stack (the next page taken is the back): sized pool_pages at construction.
    std::vector<std::int32_t> free_pages;
    /// Block table entries changed since a device backend last uploaded the tables, so that it
    /// uploads only those (a flush changes one entry per flushing sequence). When more change than
    /// the list's capacity (reserved by the backend; 0 on the CPU), block_table_version moves
    /// instead, and the whole table goes up. Mutable: attend() uploads from a const state.
    mutable std::vector<std::int64_t> table_changes;
    /// Bumped when block table entries changed beyond what table_changes holds.
    std::uint64_t block_table_version = 0;
    void note_table_change(std::int64_t entry) {
        if (table_changes.size() < table_changes.capacity())
            table_changes.push_back(entry);
        else
            ++block_table_version;
    }
    /// Throws when the pool cannot give `n` more pages (validation before mutation).
    void check_pool(const char* what, std::int64_t n) const;
    /// Block table entries [first, first + n) of `seq` take free pages (the caller checked there are).
    void take_pages(int seq, int first, int n) {
        for (int i = 0; i < n; ++i) {
            const std::int64_t entry = layout().block_entry(seq, first + i);
            block_table[static_cast<std::size_t>(entry)] = free_pages.back();
            free_pages.pop_back();
            note_table_change(entry);
        }
    }
    /// The pages of entries [first, first + n) of `seq` go back to the pool, in the reverse of the
    /// order take_pages took them, so taking and giving back leaves the pool as it was.
    void give_back_pages(int seq, int first, int n) {
        for (int i = n - 1; i >= 0; --i) {
            const std::int64_t entry = layout().block_entry(seq, first + i);
            std::int32_t& slot = block_table[static_cast<std::size_t>(entry)];
            free_pages.push_back(slot);
            slot = -1;
            note_table_change(entry);
        }
    }
    bool user_code = false;  ///< a user miner or gate (user_policies.hpp): append keeps the bank sizes to undo
    std::vector<int> undo_k_bank_size, undo_v_bank_size;
    token_quantizer v_quantizer{};

    // Quantized history: the page pool, [pool slot][head][...] (page_layout.hpp), and the block
    // tables, [seq][max_pages] pool slots (-1: no page). A GPU cache keeps the data arrays (codes,
    // scales, indices, gates, banks, windows) on its device: their host copies exist only once
    // allocate_host_arrays() made them (to save, load or dequantize); the block tables and all
    // counters are always the host's.
    bool host_arrays = false;
    /// The data arrays in host memory, zeroed, if they are not there yet.
    void allocate_host_arrays();
    /// Frees the data arrays' host copies (a GPU cache after a load).
    void release_host_arrays();
    /// f(array, elements) for each data array (codes, gates, scales, indices, banks, windows), with
    /// the elements the layout gives it.
    template <class State, class F>
    static void each_data_array(State& s, F&& f) {
        const core::cache_sizes n = s.layout().sizes(s.batch);
        f(s.k_codes, n.k_codes), f(s.v_codes, n.v_codes), f(s.v_gate, n.v_gate), f(s.k_sm, n.k_sm), f(s.v_sm, n.v_sm);
        f(s.k_index, n.k_index), f(s.v_index, n.v_index), f(s.k_bank, n.bank), f(s.v_bank, n.bank);
        f(s.window_k, n.window), f(s.window_v, n.window);
    }
    std::vector<std::uint32_t> k_codes, v_codes, v_gate;
    std::vector<core::scale_min> k_sm, v_sm;
    std::vector<std::uint8_t> k_index, v_index;
    std::vector<std::int32_t> block_table;
    // pattern banks, fp16 bits [sh][bank_capacity][d], and their sizes [sh]
    std::vector<std::uint16_t> k_bank, v_bank;
    std::vector<int> k_bank_size, v_bank_size;
    // full-precision window, fp16 bits [sh][R][d]
    std::vector<std::uint16_t> window_k, window_v;
    // per sequence
    std::vector<int> pages;         ///< quantized pages
    std::vector<int> window_count;  ///< tokens in the window
    std::vector<int> all_seqs;      ///< 0 .. batch - 1

    // scratch (reused; grows only on first use)
    std::vector<std::uint16_t> in_k, in_v;                   ///< converted append/prefill inputs
    mutable std::vector<float> q_in;                         ///< converted queries [n][Hq][d]
    mutable std::vector<float> q_tau;                        ///< scaled queries [n][Hq][d]
    mutable std::vector<float> qm;                           ///< q . K patterns [n][Hq][bank_capacity]
    mutable std::vector<float> partials;                     ///< split records [n][Hq][max_splits][stride]
    mutable std::vector<float> out;                          ///< attention output [n][Hq][d] before the copy into the user's view
    mutable std::vector<std::vector<float>> thread_scratch;  ///< [arena thread slot], each max_scratch_floats()

    std::unique_ptr<cache_backend> impl;  ///< where the data lives and the kernels run

    int heads() const { return cfg.num_kv_heads; }
    int d() const { return cfg.head_dim; }
    int gqa() const { return cfg.num_q_heads / cfg.num_kv_heads; }
    bool has_patterns() const { return bank_capacity > 0; }
    /// Whether the K (v = false) or V (v = true) side aligns to patterns.
    bool side_has_patterns(bool v) const { return has_patterns() && (v || geom.k_patterns); }
    /// K patterns with per-channel selection at prefill (and a K bank that no flush grows).
    bool selects_k_channels() const { return side_has_patterns(false) && cfg.k_channel_select && geom.k_per_channel; }
    /// Whether the flush that makes a sequence's page count `pages_after` may add a pattern to its K
    /// (v = false) or V bank of `rows` patterns (when the miner proposes one): a side with patterns,
    /// except a channel-selected K bank, which stays as mined; a bank with room; and fewer patterns
    /// than one per tokens_per_pattern quantized tokens (the rule that sized the mined bank).
    bool bank_may_grow(bool v, int rows, std::int64_t pages_after) const {
        return side_has_patterns(v) && (v || !selects_k_channels()) && rows < bank_capacity &&
               rows < core::mined_patterns(pages_after * geom.tokens, bank_capacity, cfg.tokens_per_pattern);
    }
    /// Where every array lives (core/cache_layout.hpp: the host's, the device's and the files' one definition).
    core::cache_layout layout() const { return {geom, heads(), max_pages, pool_pages, bank_capacity}; }
    /// The arrays' storage. The const state hands out const views only (head, bank, window below).
    core::cache_pointers pointers() const {
        auto* self = const_cast<layer_cache_state*>(this);
        return {self->k_codes.data(), self->v_codes.data(),  self->v_gate.data(),   self->k_sm.data(),
                self->v_sm.data(),    self->k_index.data(),  self->v_index.data(),  self->k_bank.data(),
                self->v_bank.data(),  self->window_k.data(), self->window_v.data(), self->block_table.data()};
    }
    int max_splits() const { return layout().max_splits(); }
    std::size_t sh(int seq, int h) const { return static_cast<std::size_t>(layout().sh(seq, h)); }
    std::int64_t tokens(int seq) const { return static_cast<std::int64_t>(pages[seq]) * geom.tokens + window_count[seq]; }

    core::head_pages head(int seq, int h) const { return layout().head(pointers(), seq, h); }
    core::page_ref page_mut(int seq, int h, int page) { return layout().page(pointers(), seq, h, page); }
    std::uint16_t* bank(bool v, int seq, int h) { return layout().bank(pointers(), v, seq, h); }
    const std::uint16_t* bank(bool v, int seq, int h) const { return layout().bank(pointers(), v, seq, h); }
    std::uint16_t* window(bool v, int seq, int h) { return layout().window(pointers(), v, seq, h); }
    const std::uint16_t* window(bool v, int seq, int h) const { return layout().window(pointers(), v, seq, h); }
    // Per-thread scratch of the CPU kernels, in floats: page encoding, a flush's centre, one
    // attention split, one split combine.
    std::size_t encode_scratch_floats() const { return static_cast<std::size_t>(2 * geom.tokens + bank_capacity) * d(); }
    std::size_t flush_scratch_floats() const { return static_cast<std::size_t>(geom.tokens + 1) * d(); }
    std::size_t split_scratch_floats() const {
        return static_cast<std::size_t>(core::split_scratch_floats(gqa(), core::split_tokens(geom), d(), geom.tokens, d() / geom.v_group));
    }
    std::size_t combine_scratch_floats() const { return static_cast<std::size_t>(bank_capacity + d()); }
    std::size_t max_scratch_floats() const {
        return std::max({encode_scratch_floats(), flush_scratch_floats(), split_scratch_floats(), combine_scratch_floats()});
    }
    /// One scratch buffer per thread slot of the current task arena, all of the largest size, so
    /// kernels never allocate. Called before any parallel work; it allocates only when the arena
    /// has more threads than any arena the cache ran in before (at construction, the default one).
    void reserve_thread_scratch() const {
        const auto slots = static_cast<std::size_t>(tbb::this_task_arena::max_concurrency());
        if (thread_scratch.size() < slots) thread_scratch.resize(slots, std::vector<float>(max_scratch_floats()));
    }
    /// This thread's scratch: max_scratch_floats() floats.
    float* scratch() const { return thread_scratch[static_cast<std::size_t>(tbb::this_task_arena::current_thread_index())].data(); }
};

namespace detail {
/// A cache's internal state, for the library's own tests, fuzzers and diagnostics (not part of the API).
struct state_access {
    static const layer_cache_state& of(const layer_cache& c) { return *c.state_; }
};
}  // namespace detail

/// The internal state of `c` (detail::state_access).
inline const layer_cache_state& state_of(const layer_cache& c) { return detail::state_access::of(c); }

}  // namespace patternkv

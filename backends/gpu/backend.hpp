#pragma once
// The GPU cache_backend shared by CUDA and HIP (compiled once by nvcc, once by hipcc, into
// patternkv::cuda / patternkv::hip). The device holds every data array of layer_cache_state,
// allocated for the full capacity at construction (the host allocates its copies only for
// sync_to_host and loads); the host keeps the counters (pages, window_count, bank sizes) and the
// block tables, updates the bank sizes exactly as cpu_backend.cpp does, and uploads them before
// every operation (the block tables only when they changed). All work goes to one stream, the
// caller's (set_stream): a call with device views only enqueues; a call with host views copies its
// inputs in, enqueues the same kernels and waits for its results.
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <span>
#include <string>
#include <variant>
#include <vector>

#include "attend_kernels.hpp"
#include "cache_arrays.hpp"
#include "device_views.hpp"
#include "encode_kernels.hpp"
#include "kmeans_kernels.hpp"
#include "src/cache_backend.hpp"
#include "src/layer_cache_state.hpp"
#include "runtime.hpp"
#include "upload_ring.hpp"

namespace patternkv::PKV_GPU_NS {

/// Gate: the V gate the encode kernels run (encode_kernels.hpp: pattern_gate, the config's, or a
/// user_gate).
template <class Gate>
class gpu_backend final : public cache_backend {
public:
    gpu_backend(const layer_cache_state& s, backend kind, Gate gate);

    backend kind() const override { return kind_; }
    void prefill(layer_cache_state& s, int seq, const std::uint16_t* k, const std::uint16_t* v, int T) override;
    void append(layer_cache_state& s, std::span<const int> seqs, const std::uint16_t* k, const std::uint16_t* v) override;
    void attend(const layer_cache_state& s, std::span<const int> seqs, const float* q, float* out) const override;
    void sync_to_host(layer_cache_state& s) const override;
    void sync_from_host(const layer_cache_state& s) override;

    bool device_views() const override { return true; }
    void prefill_device(layer_cache_state& s, int seq, const const_tensor_view& k, const const_tensor_view& v, int T) override;
    void append_device(layer_cache_state& s, std::span<const int> seqs, const const_tensor_view& k, const const_tensor_view& v) override;
    void attend_device(const layer_cache_state& s, std::span<const int> seqs, const const_tensor_view& q,
                       const tensor_view& out) const override;
    void set_stream(void* stream) override { stream_ = static_cast<gpu::stream_t>(stream); }
    void* stream() const override { return stream_; }
    void synchronize() const override;

private:
    // Offsets into the uploaded int block `meta` (layout fixed at construction).
    struct meta_layout {
        std::size_t pages, window_count, k_bank_size, v_bank_size, seqs, job_seq, job_page, centre_slot, total;
    };

    void upload_meta(const layer_cache_state& s) const;
    // The operations on fp16 rows already on the device (prompt_ [2][H][T][d], in_ [2][H][n][d]) and
    // on query / output views: what host and device calls share.
    void prefill_rows(layer_cache_state& s, int seq, const std::uint16_t* x, int T);
    void append_rows(layer_cache_state& s, std::span<const int> seqs, const input_view* views);
    void attend_views(const layer_cache_state& s, std::span<const int> seqs, input_view q, output_rows out) const;
    void clear_faults() const;
    /// f(device buffer, host array, elements) for each data array of `s`
    /// (layer_cache_state::each_data_array's arrays and sizes).
    template <class Self, class State, class F>
    static void each_array(Self& b, State& s, F&& f) {
        const core::cache_sizes n = s.layout().sizes(s.batch);
        f(b.k_codes_, s.k_codes, n.k_codes), f(b.v_codes_, s.v_codes, n.v_codes), f(b.v_gate_, s.v_gate, n.v_gate);
        f(b.k_sm_, s.k_sm, n.k_sm), f(b.v_sm_, s.v_sm, n.v_sm), f(b.k_index_, s.k_index, n.k_index);
        f(b.v_index_, s.v_index, n.v_index), f(b.k_bank_, s.k_bank, n.bank), f(b.v_bank_, s.v_bank, n.bank);
        f(b.window_k_, s.window_k, n.window), f(b.window_v_, s.window_v, n.window);
    }
    void select_k_channels(const layer_cache_state& s, int seq, const float* rows, int T, int count);
    cache_counters counters() const;
    void encode(int jobs, int pages, const float* rows, std::int64_t job_stride, std::int64_t head_stride, bool flush,
                gpu::device_buffer<float>& resid, gpu::device_buffer<std::uint8_t>& flags);

    backend kind_;
    gpu::stream_t stream_{};  ///< the caller's (nullptr: the default stream)
    int batch_, heads_, d_, R_, cap_, q_heads_, gqa_, pps_;
    /// A split block serving `heads` query heads (attend_kernels.hpp): its shared page buffers (0:
    /// codes read from global memory) and its shared memory.
    struct split_block_shape {
        int heads, stages;
        std::size_t bytes;
    };
    std::vector<split_block_shape> split_shapes_;  ///< one per divisor of the group that fits the device, most heads first
    int multiprocessors_ = 1;                      ///< the device's SMs (CUs)
    bool fill_sms_ = true;                         ///< chunk GQA groups until the split blocks cover the SMs
    bool mma_ = false;                             ///< whether split blocks sum codes with int8 warp matrix products
    const split_block_shape& split_shape_for(std::int64_t group_blocks) const;
    bool grow_ = false;
    kmeans_miner kmeans_{};
    Gate gate_;
    float tau_;

    // mirrors of layer_cache_state's data arrays
    gpu::device_buffer<std::uint32_t> k_codes_, v_codes_, v_gate_;
    gpu::device_buffer<core::scale_min> k_sm_, v_sm_;
    gpu::device_buffer<std::uint8_t> k_index_, v_index_;
    gpu::device_buffer<std::uint16_t> k_bank_, v_bank_, window_k_, window_v_;
    gpu::device_buffer<std::int32_t> block_table_;
    mutable std::uint64_t uploaded_tables_ = ~std::uint64_t{0};  ///< block_table_version of the device copy
    mutable std::vector<std::int64_t> table_pairs_;              ///< changed entries, then their values
    gpu::device_buffer<std::int64_t> table_pairs_dev_;
    cache_arrays arrays_{};

    // invalid elements of device views since the last synchronize (device_views.hpp), per input_tensor
    gpu::device_buffer<unsigned long long> faults_;

    // counters and per-call index lists
    meta_layout meta_{};
    mutable std::vector<int> meta_host_;
    gpu::device_buffer<int> meta_dev_;
    mutable gpu::upload_ring uploads_;  ///< the per-call uploads above, from page-locked memory

    // append input and attention buffers (fixed size)
    gpu::device_buffer<std::uint16_t> in_;
    gpu::device_buffer<float> q_, q_tau_, qm_, hist_, out_;
    mutable gpu::device_buffer<float> partials_;  ///< grows to the live splits of the largest call
    mutable gpu::device_buffer<int> done_;        ///< finished split blocks per (sequence, KV head, chunk): 0 between attends

    // flush scratch (grows to the largest number of sequences flushing at once)
    gpu::device_buffer<float> flush_rows_, flush_resid_, flush_bank_;
    gpu::device_buffer<std::uint8_t> flush_flags_;
    gpu::device_buffer<float> bank_f_;  // used by encode: [jobs][2][H][cap][d]

    // prefill scratch (gpu::workspace: grows to the largest prompt, no malloc/free per call)
    gpu::device_buffer<std::uint16_t> prompt_;
    gpu::device_buffer<float> prompt_rows_, select_bank_, prefill_resid_;
    gpu::device_buffer<int> assign_;
    gpu::device_buffer<std::uint8_t> select_codes_;
    kmeans_workspace kmeans_scratch_;
    gpu::device_buffer<std::uint8_t> prefill_flags_;
};

template <class Gate>
inline gpu_backend<Gate>::gpu_backend(const layer_cache_state& s, backend kind, Gate gate)
    : kind_(kind),
      batch_(s.batch),
      heads_(s.heads()),
      d_(s.d()),
      R_(s.geom.tokens),
      cap_(s.bank_capacity),
      q_heads_(s.cfg.num_q_heads),
      gqa_(s.gqa()),
      pps_(core::pages_per_split(s.geom.tokens)),
      gate_(gate),
      tau_(s.cfg.scale()) {
    if (const auto* m = std::get_if<kmeans_miner>(&s.miner)) {
        kmeans_ = *m;
        grow_ = m->grow;
    }

    // every data array zeroed, as the host's state starts
    each_array(*this, s, [](auto& buffer, const auto&, std::int64_t elements) {
        buffer = gpu::malloc_device<typename std::remove_reference_t<decltype(buffer)>::value_type>(static_cast<std::size_t>(elements));
        gpu::zero(nullptr, buffer.get(), buffer.size());
    });
    block_table_ = gpu::malloc_device<std::int32_t>(s.block_table.size());  // uploaded by the first operation
    // Later operations upload the entries that changed: up to two per sequence and call (a flush
    // taking a page, a failed one giving it back), more (a prefill, a reset) send the whole table.
    const std::size_t changes = 2 * static_cast<std::size_t>(batch_) + 64;
    s.table_changes.clear();
    s.table_changes.reserve(changes);
    table_pairs_.reserve(2 * changes);
    table_pairs_dev_ = gpu::malloc_device<std::int64_t>(2 * changes);
    arrays_ = {s.layout(),
               {k_codes_.get(), v_codes_.get(), v_gate_.get(), k_sm_.get(), v_sm_.get(), k_index_.get(), v_index_.get(), k_bank_.get(),
                v_bank_.get(), window_k_.get(), window_v_.get(), block_table_.get()}};

    const std::size_t B = static_cast<std::size_t>(batch_), BH = B * heads_;
    meta_.pages = 0;
    meta_.window_count = B;
    meta_.k_bank_size = 2 * B;
    meta_.v_bank_size = 2 * B + BH;
    meta_.seqs = 2 * B + 2 * BH;
    meta_.job_seq = 3 * B + 2 * BH;
    meta_.job_page = 4 * B + 2 * BH;
    meta_.centre_slot = 5 * B + 2 * BH;
    meta_.total = 5 * B + 4 * BH;
    meta_host_.assign(meta_.total, 0);
    meta_dev_ = gpu::malloc_device<int>(meta_.total);
    // Eight page-locked slots, each holding the largest per-call upload: the counters and lists,
    // the block-table changes, or the fault slots.
    uploads_ = gpu::upload_ring(
        std::max({meta_.total * sizeof(int), 2 * changes * sizeof(std::int64_t), input_tensors * sizeof(unsigned long long)}), 8);

    // A split block serves a chunk of the GQA group: a divisor of it whose shared memory fits the
    // device (each chunk reads the codes; the whole group when it fits and the blocks cover the
    // SMs, see split_shape_for). It streams pages through three shared page buffers (two pages in
    // flight) when those fit too, else two, else none.
    const auto limit = static_cast<std::size_t>(gpu::max_shared_bytes());
    for (int hc = gqa_; hc >= 1; --hc)
        for (const int stages : {split_shared::max_stages, 2, 0})
            if (const std::size_t bytes = split_shared::layout(s.geom, hc, cap_, stages).bytes();
                gqa_ % hc == 0 && bytes <= limit && (split_shapes_.empty() || split_shapes_.back().heads != hc))
                split_shapes_.push_back({hc, stages, bytes});
    if (split_shapes_.empty())
        throw error("GPU backend: decode attention needs " + std::to_string(split_shared::layout(s.geom, 1, cap_, 0).bytes()) +
                    " bytes of shared memory per block for head_dim " + std::to_string(d_) + " and residual_length " + std::to_string(R_) +
                    "; the device gives " + std::to_string(limit));
    multiprocessors_ = gpu::multiprocessors();
    fill_sms_ = !gpu::switched_off("PATTERNKV_GPU_FILL_SMS");
    // int8 warp matrix products where the device has them (the same sums as dp4a, faster at GQA >= 4);
    // PATTERNKV_GPU_INT8_MMA=0 turns them off, to compare the two on one device.
    mma_ = gpu::device_int8_mma() && !gpu::switched_off("PATTERNKV_GPU_INT8_MMA");

    const std::size_t BQ = B * q_heads_;
    in_ = gpu::malloc_device<std::uint16_t>(2 * BH * d_);
    q_ = gpu::malloc_device<float>(BQ * d_);
    q_tau_ = gpu::malloc_device<float>(BQ * d_);
    qm_ = gpu::malloc_device<float>(BQ * cap_);
    hist_ = gpu::malloc_device<float>(BQ * cap_);
    out_ = gpu::malloc_device<float>(BQ * d_);
    faults_ = gpu::malloc_device<unsigned long long>(input_tensors);
    clear_faults();
    gpu::check(gpu::synchronize(stream_), "GPU backend construction");
}

// The most heads per block (each chunk reads every code, so fewer chunks read fewer bytes), unless
// the call's blocks would then leave SMs idle: a short context at a small batch (4K tokens, batch
// 1, 8 KV heads: 5 splits x 8 = 40 blocks for 132 SMs; 16K with 2 KV heads: 34) then takes the
// fewest chunks whose blocks cover the SMs, the idle SMs' share of the bandwidth being worth more than the extra reads (the
// chunks of one split run at once, so their reads after the first mostly hit L2). Every head's
// bits are the same whichever chunk serves it. group_blocks: the call's blocks at one chunk per group.
template <class Gate>
inline auto gpu_backend<Gate>::split_shape_for(std::int64_t group_blocks) const -> const split_block_shape& {
    for (const split_block_shape& shape : split_shapes_)
        if (!fill_sms_ || group_blocks * (gqa_ / shape.heads) >= multiprocessors_) return shape;
    return split_shapes_.back();
}

template <class Gate>
inline cache_counters gpu_backend<Gate>::counters() const {
    const int* m = meta_dev_.get();
    return {m + meta_.pages, m + meta_.window_count, m + meta_.k_bank_size, m + meta_.v_bank_size};
}

// Counters and block tables from the host state; the caller fills seqs / jobs (and may override bank
// sizes) first.
template <class Gate>
inline void gpu_backend<Gate>::upload_meta(const layer_cache_state& s) const {
    if (uploaded_tables_ != s.block_table_version) {
        gpu::copy_to_device(stream_, block_table_.get(), s.block_table.data(), s.block_table.size());
        uploaded_tables_ = s.block_table_version;
    } else if (const auto n = static_cast<std::int64_t>(s.table_changes.size()); n > 0) {
        table_pairs_.assign(s.table_changes.begin(), s.table_changes.end());  // within the reserved capacity
        for (const std::int64_t entry : s.table_changes) table_pairs_.push_back(s.block_table[static_cast<std::size_t>(entry)]);
        uploads_.send(stream_, table_pairs_dev_.get(), table_pairs_.data(), table_pairs_.size());
        gpu::launch(stream_, set_table_entries_kernel, gpu::blocks_for(n, elementwise_threads), elementwise_threads, "set_table_entries",
                    block_table_.get(), table_pairs_dev_.get(), n);
    }
    s.table_changes.clear();
    std::copy(s.pages.begin(), s.pages.end(), meta_host_.begin() + meta_.pages);
    std::copy(s.window_count.begin(), s.window_count.end(), meta_host_.begin() + meta_.window_count);
    uploads_.send(stream_, meta_dev_.get(), meta_host_.data(), meta_.total);
}

template <class Gate>
inline void gpu_backend<Gate>::encode(int jobs, int pages, const float* rows, std::int64_t job_stride, std::int64_t head_stride, bool flush,
                                      gpu::device_buffer<float>& resid, gpu::device_buffer<std::uint8_t>& flags) {
    const std::int64_t tokens = static_cast<std::int64_t>(pages) * R_, H = heads_;
    (void)gpu::workspace(resid, static_cast<std::size_t>(jobs * 2 * H * tokens * d_));
    // gate flags, then K and V indices, then (per-channel K) each channel's codes before packing
    const std::int64_t flag_bytes = jobs * 3 * H * tokens;
    (void)gpu::workspace(flags, static_cast<std::size_t>(flag_bytes + (arrays_.g.k_per_channel ? jobs * H * tokens * d_ : 0)));
    (void)gpu::workspace(bank_f_, static_cast<std::size_t>(jobs) * 2 * H * cap_ * d_);
    const int* m = meta_dev_.get();
    const encode_params p{arrays_,
                          counters(),
                          m + meta_.job_seq,
                          m + meta_.job_page,
                          jobs,
                          pages,
                          rows,
                          job_stride,
                          head_stride,
                          resid.get(),
                          bank_f_.get(),
                          flags.get(),
                          flags.get() + jobs * H * tokens,
                          flags.get() + flag_bytes,
                          flush};
    const int E = elementwise_threads, Hv = heavy_threads;
    if (cap_ > 0) gpu::launch(stream_, bank_to_float_kernel, gpu::blocks_for(jobs * 2 * H * cap_ * d_, E), E, "bank_to_float", p);
    gpu::launch(stream_, align_kernel<Gate>, gpu::blocks_for(jobs * 2 * H * tokens, Hv), Hv, "align", p, gate_);
    if (cap_ > 0) {
        gpu::launch(stream_, pack_gate_kernel, gpu::blocks_for(jobs * H * pages * arrays_.g.gate_words(), E), E, "pack_gate", p);
        gpu::launch(stream_, pack_index_kernel, gpu::blocks_for(jobs * 2 * H * pages * arrays_.g.index_bytes(), E), E, "pack_index", p);
    }
    if (arrays_.g.k_per_channel)
        gpu::launch(stream_, quantize_k_channel_kernel, gpu::blocks_for(jobs * H * pages * d_, Hv), Hv, "quantize_k_channel", p);
    else
        gpu::launch(stream_, quantize_token_rows_kernel, gpu::blocks_for(jobs * H * tokens, Hv), Hv, "quantize_k_rows", p, 0);
    gpu::launch(stream_, quantize_token_rows_kernel, gpu::blocks_for(jobs * H * tokens, Hv), Hv, "quantize_v_rows", p, 1);
}

// K channel selection of a fresh prefill (cpu_backend.cpp: select_k_channels). rows: K then V as
// floats [2][H][T][d]; the K banks hold `count` mined patterns.
template <class Gate>
inline void gpu_backend<Gate>::select_k_channels(const layer_cache_state& s, int seq, const float* rows, int T, int count) {
    const std::int64_t H = heads_, per = static_cast<std::int64_t>(cap_) * d_, group = s.cfg.k_group;
    // the banks as floats, then each (head, channel)'s residual column of one token group
    float* bank_f = gpu::workspace(select_bank_, static_cast<std::size_t>(H * per + H * d_ * group));
    std::uint8_t* codes = gpu::workspace(select_codes_, static_cast<std::size_t>(H * d_ * group));
    int* assign = gpu::workspace(assign_, static_cast<std::size_t>(H * T));
    const int E = elementwise_threads;
    gpu::launch(stream_, halves_to_floats_kernel, gpu::blocks_for(H * per, E), E, "k_bank_to_float", arrays_.bank(false, seq, 0), H * per,
                bank_f);
    gpu::launch(stream_, k_select_assign_kernel, gpu::blocks_for(H * T, E), E, "k_select_assign", arrays_, rows, T, bank_f, count, assign);
    gpu::launch(stream_, k_select_channels_kernel, gpu::blocks_for(H * d_, E), E, "k_select_channels", arrays_, seq, rows, T, bank_f, count,
                assign, s.cfg.k_group, s.cfg.k_bits, bank_f + H * per, codes);
}

template <class Gate>
inline void gpu_backend<Gate>::prefill(layer_cache_state& s, int seq, const std::uint16_t* xk, const std::uint16_t* xv, int T) {
    const std::size_t n = static_cast<std::size_t>(heads_) * T * d_;
    std::uint16_t* x = gpu::workspace(prompt_, 2 * n);
    gpu::copy_to_device(stream_, x, xk, n);
    gpu::copy_to_device(stream_, x + n, xv, n);
    prefill_rows(s, seq, x, T);
    gpu::check(gpu::synchronize(stream_), "prefill");
}

template <class Gate>
inline void gpu_backend<Gate>::prefill_device(layer_cache_state& s, int seq, const const_tensor_view& k, const const_tensor_view& v,
                                              int T) {
    const std::int64_t halves = std::int64_t{2} * heads_ * T * d_;
    std::uint16_t* x = gpu::workspace(prompt_, static_cast<std::size_t>(halves));
    gpu::launch(stream_, views_to_halves_kernel, gpu::blocks_for(halves, elementwise_threads), elementwise_threads, "prefill_views",
                input_view::of(k), input_view::of(v), T, heads_, d_, nullptr, seq, faults_.get() + prefill_k, x);
    prefill_rows(s, seq, x, T);
}

// x: the prompt as fp16 rows [2][H][T][d] on the device.
template <class Gate>
inline void gpu_backend<Gate>::prefill_rows(layer_cache_state& s, int seq, const std::uint16_t* x, int T) {
    // The sink rows stay as they are (cpu_backend.cpp: prefill); M tokens after them are mined and paged.
    const core::page_geometry& g = arrays_.g;
    const std::int64_t H = heads_;
    const int full = static_cast<int>(g.prompt_pages(T)), sink = static_cast<int>(g.sink_rows(T)), M = T - sink;
    const int tail = M - full * R_;
    const std::int64_t m = H * M * d_;  // floats per K or V of the mined rows
    float* rows = gpu::workspace(prompt_rows_, static_cast<std::size_t>(2 * m));
    if (M > 0)
        gpu::launch(stream_, prompt_rows_kernel, gpu::blocks_for(2 * m, elementwise_threads), elementwise_threads, "prompt_rows", x,
                    static_cast<int>(2 * H), T, sink, d_, rows);

    // Banks (kmeans_miner::mine): the tokens themselves when M <= num_patterns, else k-means.
    int bank = 0;
    if (cap_ > 0 && M > 0) {
        const int k = kmeans_.patterns_for(M);
        if (core::bank_is_tokens(M, k)) {
            bank = M;
            gpu::launch(stream_, bank_from_tokens_kernel, gpu::blocks_for(2 * m, elementwise_threads), elementwise_threads,
                        "bank_from_tokens", arrays_, seq, rows, M);
        } else {
            bank = k;
            const int first = g.k_patterns ? 0 : heads_, problems = 2 * heads_ - first;  // no K bank without k_patterns
            mine_banks(stream_, {arrays_, seq, M, first, problems, rows, k, kmeans_.iterations, kmeans_.tolerance, kmeans_.seed,
                                 kmeans_scratch_.bind(problems, M, k, d_)});
        }
    }
    if (cap_ > 0 && s.selects_k_channels() && bank > 0) select_k_channels(s, seq, rows, M, bank);
    // The new bank sizes go to the device now and to the host state only once everything succeeded.
    std::copy(s.k_bank_size.begin(), s.k_bank_size.end(), meta_host_.begin() + meta_.k_bank_size);
    std::copy(s.v_bank_size.begin(), s.v_bank_size.end(), meta_host_.begin() + meta_.v_bank_size);
    const int k_bank = arrays_.g.k_patterns ? bank : 0;
    if (cap_ > 0)
        for (int h = 0; h < heads_; ++h) {
            meta_host_[meta_.k_bank_size + s.sh(seq, h)] = k_bank;
            meta_host_[meta_.v_bank_size + s.sh(seq, h)] = bank;
        }
    meta_host_[meta_.job_seq] = seq;
    meta_host_[meta_.job_page] = 0;
    upload_meta(s);

    if (full > 0) encode(1, full, rows, 0, static_cast<std::int64_t>(M) * d_, false, prefill_resid_, prefill_flags_);
    if (sink > 0)
        gpu::launch(stream_, window_rows_kernel, gpu::blocks_for(2 * H * sink * d_, elementwise_threads), elementwise_threads, "sink_rows",
                    arrays_, seq, x, T, 0, sink, 0);
    if (tail > 0)
        gpu::launch(stream_, window_rows_kernel, gpu::blocks_for(2 * H * tail * d_, elementwise_threads), elementwise_threads,
                    "window_tail", arrays_, seq, x, T, sink + full * R_, tail, sink);
    if (cap_ > 0)
        for (int h = 0; h < heads_; ++h) {
            s.k_bank_size[s.sh(seq, h)] = k_bank;
            s.v_bank_size[s.sh(seq, h)] = bank;
        }
}

template <class Gate>
inline void gpu_backend<Gate>::append(layer_cache_state& s, std::span<const int> seqs, const std::uint16_t* xk, const std::uint16_t* xv) {
    const std::size_t rows = static_cast<std::size_t>(heads_) * seqs.size() * d_;
    if (rows == 0) return;
    gpu::copy_to_device(stream_, in_.get(), xk, rows);
    gpu::copy_to_device(stream_, in_.get() + rows, xv, rows);
    append_rows(s, seqs, nullptr);
    gpu::check(gpu::synchronize(stream_), "append");
}

template <class Gate>
inline void gpu_backend<Gate>::append_device(layer_cache_state& s, std::span<const int> seqs, const const_tensor_view& k,
                                             const const_tensor_view& v) {
    const input_view views[2] = {input_view::of(k), input_view::of(v)};
    if (!seqs.empty()) append_rows(s, seqs, views);
}

// The tokens' fp16 rows [2][H][n][d] are in in_, or come from `views` (the caller's K and V on the
// device), converted into in_ once the sequence list is on the device (it names faulty rows).
template <class Gate>
inline void gpu_backend<Gate>::append_rows(layer_cache_state& s, std::span<const int> seqs, const input_view* views) {
    const int n = static_cast<int>(seqs.size()), H = heads_;

    // The cache's plan (layer_cache_state::append_plan): the sequences whose full window flushes
    // before the new token, and the banks each flush may add its window's Chebyshev centre to.
    std::copy(s.k_bank_size.begin(), s.k_bank_size.end(), meta_host_.begin() + meta_.k_bank_size);
    std::copy(s.v_bank_size.begin(), s.v_bank_size.end(), meta_host_.begin() + meta_.v_bank_size);
    for (int i = 0; i < n; ++i) meta_host_[meta_.seqs + i] = seqs[i];
    const int jobs = s.plan.jobs;
    for (int job = 0; job < jobs; ++job) {
        const int seq = s.plan.flush_seq[job];
        meta_host_[meta_.job_seq + job] = seq;
        meta_host_[meta_.job_page + job] = s.pages[seq];
        for (int kv = 0; kv < 2; ++kv)
            for (int h = 0; h < H; ++h) {
                int& nb = meta_host_[(kv == 1 ? meta_.v_bank_size : meta_.k_bank_size) + s.sh(seq, h)];
                int& slot = meta_host_[meta_.centre_slot + (static_cast<std::size_t>(job) * 2 + kv) * H + h];
                slot = grow_ && s.plan.grows(job, kv == 1, h, H) ? nb++ : -1;
            }
    }
    upload_meta(s);
    const int* m = meta_dev_.get();
    const int E = elementwise_threads;
    if (views != nullptr)
        gpu::launch(stream_, views_to_halves_kernel, gpu::blocks_for(std::int64_t{2} * H * n * d_, E), E, "append_views", views[0],
                    views[1], n, H, d_, m + meta_.seqs, 0, faults_.get() + append_k, in_.get());
    if (jobs > 0) {
        const std::int64_t per = static_cast<std::int64_t>(R_) * d_;
        (void)gpu::workspace(flush_rows_, static_cast<std::size_t>(jobs * 2 * H * per));
        gpu::launch(stream_, window_to_float_kernel, gpu::blocks_for(jobs * 2 * H * per, E), E, "window_to_float", arrays_,
                    m + meta_.job_seq, jobs, flush_rows_.get());
        if (cap_ > 0)
            gpu::launch(stream_, chebyshev_centre_kernel, gpu::blocks_for(static_cast<std::int64_t>(jobs) * 2 * H * d_, E), E,
                        "chebyshev_centre", arrays_, m + meta_.job_seq, jobs, m + meta_.centre_slot, flush_rows_.get());
        encode(jobs, 1, flush_rows_.get(), 2 * H * per, per, true, flush_resid_, flush_flags_);
        for (int i = 0; i < jobs; ++i) {  // emptied down to the sink rows
            int& count = meta_host_[meta_.window_count + meta_host_[meta_.job_seq + i]];
            count = arrays_.g.next_row(count);
        }
        uploads_.send(stream_, meta_dev_.get(), meta_host_.data(), meta_.total);
    }
    gpu::launch(stream_, window_write_kernel, gpu::blocks_for(static_cast<std::int64_t>(n) * 2 * H * d_, E), E, "window_write", arrays_,
                counters(), m + meta_.seqs, n, in_.get());
    for (std::size_t i = 0; i < s.k_bank_size.size(); ++i) {
        s.k_bank_size[i] = meta_host_[meta_.k_bank_size + i];
        s.v_bank_size[i] = meta_host_[meta_.v_bank_size + i];
    }
}

template <class Gate>
inline void gpu_backend<Gate>::attend(const layer_cache_state& s, std::span<const int> seqs, const float* q, float* out) const {
    const std::size_t elems = seqs.size() * q_heads_ * d_;
    if (elems == 0) return;
    gpu::copy_to_device(stream_, q_.get(), q, elems);
    attend_views(s, seqs, input_view::f32(q_.get(), q_heads_, d_), output_rows::contiguous(out_.get(), q_heads_, d_));
    gpu::copy_to_host(stream_, out, out_.get(), elems);
    gpu::check(gpu::synchronize(stream_), "attend");
}

template <class Gate>
inline void gpu_backend<Gate>::attend_device(const layer_cache_state& s, std::span<const int> seqs, const const_tensor_view& q,
                                             const tensor_view& out) const {
    if (!seqs.empty()) attend_views(s, seqs, input_view::of(q), output_rows::of(out));
}

template <class Gate>
inline void gpu_backend<Gate>::attend_views(const layer_cache_state& s, std::span<const int> seqs, input_view q, output_rows out) const {
    const int n = static_cast<int>(seqs.size());
    std::copy(s.k_bank_size.begin(), s.k_bank_size.end(), meta_host_.begin() + meta_.k_bank_size);
    std::copy(s.v_bank_size.begin(), s.v_bank_size.end(), meta_host_.begin() + meta_.v_bank_size);
    std::copy(seqs.begin(), seqs.end(), meta_host_.begin() + meta_.seqs);
    upload_meta(s);
    // Partial records for the splits the attended sequences have now, not for their capacity.
    int splits = 1;
    std::int64_t live_splits = 0;
    for (int seq : seqs) {
        const int here = core::attention_splits(s.pages[seq], s.window_count[seq], R_);
        splits = std::max(splits, here);
        live_splits += here;
    }
    const std::int64_t nq = static_cast<std::int64_t>(n) * q_heads_;
    (void)gpu::workspace(partials_, static_cast<std::size_t>(nq * splits * core::partial_stride(d_, cap_)));
    const split_block_shape& shape = split_shape_for(live_splits * heads_);
    const std::int64_t chunk_blocks = static_cast<std::int64_t>(n) * heads_ * (gqa_ / shape.heads);
    if (done_.size() < static_cast<std::size_t>(chunk_blocks)) {  // counters start at 0; the kernel leaves them at 0
        gpu::ensure_capacity(done_, static_cast<std::size_t>(chunk_blocks));
        gpu::zero(stream_, done_.get(), done_.size());
    }
    const attend_params p{arrays_,
                          counters(),
                          meta_dev_.get() + meta_.seqs,
                          n,
                          q_heads_,
                          gqa_,
                          tau_,
                          splits,
                          pps_,
                          shape.heads,
                          shape.stages,
                          mma_,
                          q,
                          faults_.get() + attend_q,
                          q_tau_.get(),
                          qm_.get(),
                          partials_.get(),
                          hist_.get(),
                          out,
                          done_.get()};
    gpu::launch(stream_, prepare_queries_kernel, gpu::blocks_for(nq, elementwise_threads), elementwise_threads, "prepare_queries", p);
    gpu::launch_with_barriers(stream_, attend_split_kernel, static_cast<unsigned>(chunk_blocks * splits), split_threads, shape.bytes,
                              "attend_split", p);
}

template <class Gate>
inline void gpu_backend<Gate>::clear_faults() const {
    const unsigned long long none[input_tensors] = {no_fault, no_fault, no_fault, no_fault, no_fault};
    uploads_.send(stream_, faults_.get(), none, input_tensors);
}

template <class Gate>
inline void gpu_backend<Gate>::synchronize() const {
    unsigned long long found[input_tensors];
    gpu::copy_to_host(stream_, found, faults_.get(), input_tensors);
    gpu::check(gpu::synchronize(stream_), "synchronize");
    std::string report;  // every tensor that held an invalid element, its first one each
    for (int t = 0; t < input_tensors; ++t) {
        if (found[t] == no_fault) continue;
        const auto seq = static_cast<int>(found[t] >> 40), head = static_cast<int>(found[t] >> 20 & 0xFFFFF),
                   channel = static_cast<int>(found[t] & 0xFFFFF);
        const bool query = t == attend_q;
        report += std::string(report.empty() ? "" : "; ") + input_tensor_names[t] + " (device view): the element of sequence " +
                  std::to_string(seq) + ", " + (query ? "query head " : "head ") + std::to_string(head) + ", channel " +
                  std::to_string(channel) +
                  (query ? " is NaN or Inf; it was read as 0 (that sequence's output is not the query's)"
                         : " is NaN, Inf or beyond |x| <= " + std::to_string(static_cast<int>(core::max_abs_input)) +
                               "; it was stored as 0 (reset() the sequence)");
    }
    if (report.empty()) return;
    clear_faults();
    throw error(report + " (the first of each tensor since the last synchronize())");
}

template <class Gate>
inline void gpu_backend<Gate>::sync_to_host(layer_cache_state& s) const {
    s.allocate_host_arrays();
    each_array(*this, s,
               [&](const auto& device, auto& host, std::int64_t) { gpu::copy_to_host(stream_, host.data(), device.get(), host.size()); });
    gpu::check(gpu::synchronize(stream_), "sync_to_host");
}

template <class Gate>
inline void gpu_backend<Gate>::sync_from_host(const layer_cache_state& s) {
    each_array(*this, s, [&](const auto& device, const auto& host, std::int64_t) {
        gpu::copy_to_device(stream_, device.get(), host.data(), host.size());
    });
    gpu::check(gpu::synchronize(stream_), "sync_from_host");
}

/// The backend for `s` on the current device of this runtime, with the config's gate.
inline std::unique_ptr<cache_backend> make_gpu_backend(const layer_cache_state& s, backend kind) {
    if (std::holds_alternative<any_gate>(s.gate))  // layer_cache refuses this first; never run another gate in its place
        throw error("GPU backend: a user gate needs make_gpu_backend_with_gate (the config's gate kernels cannot run it)");
    core::gate_params g{core::gate_rule::always, 0.0f};
    if (const auto* z = std::get_if<z_test_gate>(&s.gate))
        g = {core::gate_rule::z_test, z->c};
    else if (std::holds_alternative<never_gate>(s.gate))
        g = {core::gate_rule::never, 0.0f};
    return std::make_unique<gpu_backend<pattern_gate>>(s, kind, pattern_gate{g, s.d()});
}

/// The backend for `s` with a user's VGate `gate` compiled into the encode kernels (user_gate: its
/// residualize must be device-callable). The library's CUDA and HIP builds do not instantiate this:
/// a user's type can only reach device code compiled with it (docs/embedding.md).
template <VGate G>
std::unique_ptr<cache_backend> make_gpu_backend_with_gate(const layer_cache_state& s, backend kind, G gate) {
    return std::make_unique<gpu_backend<user_gate<G>>>(s, kind, user_gate<G>{gate, s.d()});
}

}  // namespace patternkv::PKV_GPU_NS

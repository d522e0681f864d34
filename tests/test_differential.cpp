// Differential tests, in the manner of ggml's test-backend-ops but exact: every case runs the same
// operations on a CPU reference cache and on each available GPU backend, and compares with memcmp
// the whole stored state (codes, scales/mins, pattern indices, gate bits, banks, windows, counters),
// every attention output (written between guard floats) and the memory report.
//
// A case is one struct whose parameters and seed are its name. Usage:
//   test_differential [--list] [--filter SUBSTR]... [--backend cuda|hip|cpu|emulated|emulated-no-mma]...
// --filter keeps cases whose name contains any SUBSTR. --backend picks what is compared with the
// CPU reference (default: cuda and hip): cpu compares the CPU with itself (checks the harness);
// emulated runs the GPU backend's own kernels and class compiled for the CPU
// (backends/gpu/emulation.hpp), which checks their thread mapping without a GPU. With no GPU backend available the program
// prints why for each backend and exits 77 (Meson's SKIP), unless PATTERNKV_REQUIRE_GPU=1, which
// turns that into a failure (at least one GPU backend must run). No doctest here: this binary has its own main.
#define DOCTEST_CONFIG_DISABLE  // support.hpp includes doctest; nothing of it is used or registered here
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include <unistd.h>

#include <fmt/format.h>

#include <patternkv/patternkv.hpp>

#include "src/layer_cache_state.hpp"
#include "support.hpp"

// The GPU backend's kernels and class compiled for the CPU (backends/gpu/emulation.hpp):
// --backend emulated checks their thread mapping on machines without a GPU.
#define PKV_GPU_EMULATION 1
#include "backends/gpu/backend.hpp"

namespace {

using patternkv::backend;
using patternkv::config;
using patternkv::layer_cache;

struct diff_case {
    std::string family;
    config cfg;
    int batch = 1;
    std::vector<int> prompts{300};  ///< prompt tokens per sequence (0: none, decode only)
    int steps = 0;                  ///< decode steps after the prompts
    int attend_every = 1;           ///< attention after the prompts and every n-th step (and the last)
    std::uint64_t seed = 1;
    bool subsets = false;         ///< steps append to alternating subsets of the batch
    bool duplicate_rows = false;  ///< prompts of 3 distinct rows per head (k-means empty clusters)
    bool reset_midway = false;    ///< reset() sequence 0 half way and prefill it again
    bool reload_midway = false;   ///< half way, load the CPU state into the GPU cache (sync_from_host)
    std::int64_t pool_pages = 0;  ///< pages of the shared pool (0: every sequence can reach max_tokens)
    int shared_kib = 0;           ///< emulated: the device's shared memory per block (0: the portable 48 KiB)
    int sms = 0;                  ///< emulated: the device's multiprocessors (0: one, so split blocks serve whole GQA groups)
    bool device_views = false;    ///< emulated: the GPU cache gets device views (layer_cache.hpp), the CPU the same data as host views
    std::string extra;            ///< non-default config fields, for the name

    std::string method() const {
        if (cfg.num_patterns == 0) return cfg.k_mode == patternkv::k_quant_mode::per_token ? "per-token" : "kivi";
        return "patternkv";
    }
    std::string name() const {
        std::string p;
        for (std::size_t i = 0; i < prompts.size(); ++i) {
            if (i > 0) p += ',';
            p += std::to_string(prompts[i]);
        }
        return fmt::format("{}/{} K{}V{} d{} kv{} q{} R{} batch{} prompts{} steps{}{}{}{}{}{}{}{}{}{} seed{}", family, method(), cfg.k_bits,
                           cfg.v_bits, cfg.head_dim, cfg.num_kv_heads, cfg.num_q_heads, cfg.residual_length, batch, p, steps,
                           extra.empty() ? "" : " " + extra, subsets ? " subsets" : "", duplicate_rows ? " duplicates" : "",
                           reset_midway ? " reset" : "", reload_midway ? " reload" : "",
                           pool_pages ? fmt::format(" pool{}", pool_pages) : "", shared_kib ? fmt::format(" shared{}KiB", shared_kib) : "",
                           sms ? fmt::format(" sms{}", sms) : "", device_views ? " device-views" : "", seed);
    }
    std::int64_t max_tokens() const {
        int m = 1;
        for (int p : prompts) m = std::max(m, p);
        return m + steps + 1;
    }
    patternkv::cache_capacity capacity() const { return {batch, max_tokens(), pool_pages}; }
};

config base(const std::string& method, int kb, int vb, int d, int hkv, int hq) {
    config c = method == "kivi"        ? patternkv::kivi_config(kb)
               : method == "per-token" ? patternkv::per_token_config(kb)
                                       : patternkv::patternkv_config(kb);
    c.k_bits = kb;
    c.v_bits = vb;
    c.head_dim = d;
    c.num_kv_heads = hkv;
    c.num_q_heads = hq;
    return c;
}

std::vector<diff_case> make_cases() {
    std::vector<diff_case> cases;
    std::uint64_t seed = 11;
    const auto add = [&](diff_case c) {
        c.seed = seed++;
        cases.push_back(std::move(c));
    };
    const auto simple = [&](const std::string& family, const config& cfg, std::vector<int> prompts, int steps, int every = 1) {
        diff_case c;
        c.family = family;
        c.cfg = cfg;
        c.batch = static_cast<int>(prompts.size());
        c.prompts = std::move(prompts);
        c.steps = steps;
        c.attend_every = every;
        return c;
    };
    const char* methods[] = {"patternkv", "kivi", "per-token"};

    // prefill alone: pages + window, and a prompt shorter than the pattern count (bank = tokens)
    for (const char* m : methods) add(simple("prefill", base(m, 2, 2, 128, 2, 8), {300}, 0));
    add(simple("prefill", base("patternkv", 2, 2, 128, 2, 8), {20}, 0));
    // flushes: window reaching R during decode (two flushes)
    for (const char* m : methods) add(simple("flush", base(m, 2, 2, 128, 2, 8), {100}, 160, 8));
    // attention paths: window only, history only, mixed, several splits
    for (const char* m : methods) {
        add(simple("attend-window", base(m, 2, 2, 128, 2, 8), {60}, 0));
        add(simple("attend-history", base(m, 2, 2, 128, 2, 8), {256}, 0));
        add(simple("attend-mixed", base(m, 2, 2, 128, 2, 8), {300}, 0));
    }
    add(simple("attend-splits", base("patternkv", 2, 2, 128, 2, 8), {1100}, 130, 13));
    // bit widths, K and V independent
    for (auto [kb, vb] : {std::pair{2, 2}, {3, 3}, {4, 4}, {8, 8}, {4, 2}, {8, 3}})
        for (const char* m : {"patternkv", "kivi"}) add(simple("bits", base(m, kb, vb, 128, 2, 8), {300}, 40, 4));
    // GQA ratios 1, 4, 8
    for (int g : {1, 4, 8}) add(simple("gqa", base("patternkv", 4, 4, 128, 2, 2 * g), {200}, 60, 6));
    // GQA 16: a split block serves the group in chunks on a 48 KiB device, whole (two passes of
    // eight register heads) on an H200's 227 KiB
    for (const char* method : {"patternkv", "per-token"})
        for (int kib : {0, 227}) {
            diff_case c = simple("gqa", base(method, 2, 2, 64, 2, 32), {300}, 40, 10);
            c.shared_kib = kib;
            add(c);
        }
    // a wide device: short contexts chunk the GQA group until the split blocks cover the SMs (16 SMs,
    // 4 blocks per chunk: GQA 8 in chunks of 2 heads, GQA 4 of 1); a batch attending alternating
    // subsets on 12 SMs changes its chunks with its live splits (2 or 4 heads)
    for (int g : {4, 8}) {
        diff_case c = simple("gqa", base("patternkv", 2, 2, 128, 2, 2 * g), {300}, 300, 30);
        c.sms = 16;
        add(c);
    }
    {
        diff_case c = simple("batch", base("kivi", 2, 4, 64, 2, 8), {300, 128, 77, 5}, 60, 3);
        c.subsets = true;
        c.sms = 12;
        add(c);
    }
    // head_dim 64, 96 and 128
    for (int d : {64, 96, 128}) add(simple("head-dim", base("patternkv", 2, 2, d, 2, 4), {300}, 40, 4));
    // a batch of sequences of different lengths, every step and subsets; a decode-only sequence
    {
        diff_case c = simple("batch", base("patternkv", 2, 2, 128, 2, 8), {300, 128, 77, 5}, 140, 4);
        add(c);
        c.subsets = true;
        add(c);
        add(simple("batch", base("kivi", 4, 2, 64, 4, 8), {300, 128, 77, 5}, 140, 4));
        add(simple("batch", base("patternkv", 4, 4, 64, 2, 4), {0, 40, 129}, 140, 7));
    }
    // config variants
    const auto variant = [&](const std::string& what, const std::function<void(config&)>& f, const char* m = "patternkv",
                             std::vector<int> prompts = {300, 90}, int steps = 140) {
        config c = base(m, 2, 2, 64, 2, 4);
        f(c);
        diff_case dc = simple("config", c, std::move(prompts), steps, 5);
        dc.extra = what;
        add(dc);
    };
    variant("gate=always", [](config& c) { c.gate = patternkv::gate_mode::always; });
    variant("gate=never", [](config& c) { c.gate = patternkv::gate_mode::never; });
    variant("gate_alpha=0.3", [](config& c) { c.gate_alpha = 0.3; });
    variant("v_group=16", [](config& c) { c.v_group = 16; });
    variant("k_group=32", [](config& c) { c.k_group = 32; });
    variant(
        "k_token_group=16", [](config& c) { c.k_token_group = 16; }, "per-token");
    variant(
        "R=32",
        [](config& c) {
            c.residual_length = 32;
            c.k_group = 32;
        },
        "patternkv", {300, 90}, 100);
    variant("R=64", [](config& c) {
        c.residual_length = 64;
        c.k_group = 64;
    });
    variant(
        "R=2048",
        [](config& c) {
            c.residual_length = 2048;
            c.k_group = 2048;
        },
        "patternkv", {4200, 10}, 20);
    variant(
        "max_patterns=33", [](config& c) { c.max_patterns = 33; }, "patternkv", {300, 90}, 300);  // 8-bit indices
    variant(
        "max_patterns=4",
        [](config& c) {
            c.num_patterns = 3;
            c.max_patterns = 4;
        },
        "patternkv", {300, 90}, 300);  // 2-bit
    variant(
        "R=5,max_patterns=4",
        [](config& c) {
            c.residual_length = 5;
            c.k_group = 5;
            c.num_patterns = 2;
            c.max_patterns = 4;
        },
        "patternkv", {40, 30}, 300);  // a page's last index byte half used
    variant("grow_patterns=0", [](config& c) { c.grow_patterns = false; });
    variant(
        "k_patterns=1", [](config& c) { c.k_patterns = true; }, "patternkv", {300, 90}, 300);
    variant(
        "k_patterns=1,k_channel_select=0",
        [](config& c) {
            c.k_patterns = true;
            c.k_channel_select = false;
        },
        "patternkv", {300, 90}, 300);
    variant(
        "k_patterns=1,R=32",
        [](config& c) {
            c.k_patterns = true;
            c.residual_length = 32;
            c.k_group = 32;
        },
        "patternkv", {20, 90}, 100);
    variant("num_patterns=8", [](config& c) { c.num_patterns = 8; });
    variant("tokens_per_pattern=0", [](config& c) { c.tokens_per_pattern = 0; });  // every prompt mines num_patterns
    variant(
        "tokens_per_pattern=50",
        [](config& c) {
            c.num_patterns = 8;
            c.tokens_per_pattern = 50;
        },
        "patternkv", {300, 90, 20}, 100);
    variant("sink_tokens=0", [](config& c) { c.sink_tokens = 0; });
    // prompts shorter than the sink, an empty one, and sink rows filled by appends
    variant(
        "sink_tokens=5,R=32",
        [](config& c) {
            c.sink_tokens = 5;
            c.residual_length = 32;
            c.k_group = 32;
        },
        "patternkv", {3, 0, 90}, 100);
    variant(
        "sink_tokens=4", [](config& c) { c.sink_tokens = 4; }, "kivi", {2, 300}, 140);
    variant("kmeans_iterations=1", [](config& c) { c.kmeans_iterations = 1; });
    variant("config.seed=7", [](config& c) { c.seed = 7; });
    variant("softmax_scale=0.3", [](config& c) { c.softmax_scale = 0.3f; });
    {
        diff_case c = simple("kmeans-empty-clusters", base("patternkv", 2, 2, 64, 2, 4), {200}, 0);
        c.duplicate_rows = true;
        add(c);
    }
    {
        diff_case c = simple("reset", base("patternkv", 2, 2, 64, 2, 4), {300, 90}, 120, 6);
        c.reset_midway = true;
        add(c);
    }
    {
        diff_case c = simple("sync-from-host", base("patternkv", 3, 3, 64, 2, 4), {300, 90}, 120, 6);
        c.reload_midway = true;
        add(c);
    }
    // a shared pool smaller than batch x max_tokens: pages given back by a reset are taken again
    for (const char* m : {"patternkv", "kivi"}) {
        config cfg = base(m, 2, 2, 64, 2, 4);
        cfg.residual_length = cfg.k_group = 32;
        diff_case c = simple("page-pool", cfg, {300, 0, 90, 200}, 150, 5);
        c.subsets = c.reset_midway = true;
        c.pool_pages = 40;
        add(c);
    }
    // device-resident calls: K as padded f16, V and queries as padded bf16 device views, outputs
    // into padded device rows; flushes, bank growth, subsets, a sink, a reset
    for (const char* m : methods) {
        config cfg = base(m, 2, 2, 64, 2, 8);
        cfg.sink_tokens = 4;
        diff_case c = simple("device-views", cfg, {300, 90, 2}, 100, 7);
        c.subsets = c.reset_midway = c.device_views = true;
        add(c);
    }
    // clusters of thousands of tokens: their member sums round, so a member list out of token order
    // changes the bits (smaller prompts' sums of fp16 values are mostly exact in any order)
    {
        config cfg = base("patternkv", 2, 2, 64, 2, 4);
        cfg.num_patterns = 2;
        add(simple("kmeans-order", cfg, {6000}, 0));
    }
    // long context, last (the slowest; a device run with little time left still ran the rest) (32K tokens): k-means on 32K tokens, 32+ attention splits, a flush on top
    add(simple("context-32k", base("patternkv", 2, 2, 128, 2, 8), {32768}, 130, 32));
    add(simple("context-32k", base("kivi", 2, 2, 128, 2, 8), {32700}, 70, 16));
    return cases;
}

// --- comparison -----------------------------------------------------------------------------------

/// The GPU backend's data arrays copied into the state's host arrays (internal API; the state is not
/// a const object, only the accessor is).
patternkv::layer_cache_state& synced_state(const layer_cache& cache) {
    auto& s = const_cast<patternkv::layer_cache_state&>(patternkv::state_of(cache));
    s.impl->sync_to_host(s);
    return s;
}

template <class T>
bool same_bytes(const char* field, const std::vector<T>& a, const std::vector<T>& b, std::string& why) {
    if (a.size() != b.size()) {
        why = fmt::format("{}: {} vs {} elements", field, a.size(), b.size());
        return false;
    }
    if (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0) return true;
    const auto* pa = reinterpret_cast<const std::uint8_t*>(a.data());
    const auto* pb = reinterpret_cast<const std::uint8_t*>(b.data());
    std::size_t byte = 0;
    while (pa[byte] == pb[byte]) ++byte;
    std::size_t count = 0;
    for (std::size_t i = 0; i < a.size() * sizeof(T); ++i) count += pa[i] != pb[i];
    why = fmt::format("{}: {} bytes differ, first at element {} (byte {:#04x} vs {:#04x})", field, count, byte / sizeof(T), pa[byte],
                      pb[byte]);
    return false;
}

bool same_state(const layer_cache& cpu, const layer_cache& gpu, std::string& why) {
    const patternkv::layer_cache_state& a = patternkv::state_of(cpu);
    const patternkv::layer_cache_state& b = synced_state(gpu);
    return same_bytes("k_codes", a.k_codes, b.k_codes, why) && same_bytes("v_codes", a.v_codes, b.v_codes, why) &&
           same_bytes("v_gate", a.v_gate, b.v_gate, why) && same_bytes("k_sm", a.k_sm, b.k_sm, why) &&
           same_bytes("v_sm", a.v_sm, b.v_sm, why) && same_bytes("k_index", a.k_index, b.k_index, why) &&
           same_bytes("v_index", a.v_index, b.v_index, why) && same_bytes("k_bank", a.k_bank, b.k_bank, why) &&
           same_bytes("v_bank", a.v_bank, b.v_bank, why) && same_bytes("k_bank_size", a.k_bank_size, b.k_bank_size, why) &&
           same_bytes("v_bank_size", a.v_bank_size, b.v_bank_size, why) && same_bytes("window_k", a.window_k, b.window_k, why) &&
           same_bytes("window_v", a.window_v, b.window_v, why) && same_bytes("pages", a.pages, b.pages, why) &&
           same_bytes("window_count", a.window_count, b.window_count, why) &&
           same_bytes("block_table", a.block_table, b.block_table, why) && same_bytes("free_pages", a.free_pages, b.free_pages, why);
}

bool same_memory(const layer_cache& cpu, const layer_cache& gpu, std::string& why) {
    const patternkv::memory_report a = cpu.memory(), b = gpu.memory();
    const std::uint64_t va[] = {a.code_bytes,   a.scale_min_bytes,  a.pattern_index_bytes, a.gate_bytes, a.bank_bytes,
                                a.window_bytes, a.quantized_tokens, a.window_tokens,       a.elements};
    const std::uint64_t vb[] = {b.code_bytes,   b.scale_min_bytes,  b.pattern_index_bytes, b.gate_bytes, b.bank_bytes,
                                b.window_bytes, b.quantized_tokens, b.window_tokens,       b.elements};
    if (std::memcmp(va, vb, sizeof va) == 0) return true;
    why = fmt::format("memory report: cpu [{}] vs gpu [{}]", a.describe(), b.describe());
    return false;
}

constexpr int guard_floats = 64;
constexpr std::uint32_t guard_bits = 0x7fc0deadu;

/// Attention of `seqs` into a buffer with guard floats on both sides; false if a guard changed.
bool attend_guarded(const layer_cache& cache, const std::vector<int>& seqs, const std::vector<float>& q, std::vector<float>& out) {
    const config& c = cache.cfg();
    const std::size_t n = seqs.size() * c.num_q_heads * c.head_dim;
    std::vector<std::uint32_t> buf(n + 2 * guard_floats, guard_bits);
    auto* data = reinterpret_cast<float*>(buf.data() + guard_floats);
    const auto ns = static_cast<std::int64_t>(seqs.size());
    cache.attend(seqs, patternkv::view_f32(q.data(), ns, c.num_q_heads, c.head_dim),
                 patternkv::view_f32(data, ns, c.num_q_heads, c.head_dim));
    out.assign(data, data + n);
    for (int i = 0; i < guard_floats; ++i)
        if (buf[i] != guard_bits || buf[guard_floats + n + i] != guard_bits) return false;
    return true;
}

// --- device views (layer_cache's device-resident calls, on emulated device memory) ----------------

namespace gpu = patternkv::emulated::gpu;

constexpr int row_pad = 8;                  ///< elements after each row of a staged tensor, NaN in f16 and bf16
constexpr std::uint16_t pad_bits = 0xFFFF;  ///< a kernel that reads the padding stores a NaN and changes bits

/// A tensor [a][b][c] of 16-bit `type` values in rows padded with NaNs, in host memory and in the
/// emulated device's (poisoned, then filled), with the views of each.
struct staged_tensor {
    std::vector<std::uint16_t> host;
    gpu::device_buffer<std::uint16_t> device;
    patternkv::const_tensor_view host_view, device_view;
};

staged_tensor stage(const float* x, std::int64_t a, std::int64_t b, std::int64_t c, patternkv::dtype type) {
    staged_tensor t;
    const std::int64_t row = c + row_pad;
    t.host.assign(static_cast<std::size_t>(a * b * row), pad_bits);
    for (std::int64_t r = 0; r < a * b; ++r)
        for (std::int64_t k = 0; k < c; ++k) {
            const float v = x[r * c + k];
            t.host[static_cast<std::size_t>(r * row + k)] =
                type == patternkv::dtype::f16 ? patternkv::core::float_to_half(v) : patternkv::core::float_to_bf16(v);
        }
    t.device = gpu::malloc_device<std::uint16_t>(t.host.size());
    std::memcpy(t.device.get(), t.host.data(), t.host.size() * sizeof(std::uint16_t));
    t.host_view = {t.host.data(), type, {a, b, c}, {b * row, row, 1}};
    t.device_view = patternkv::const_tensor_view{t.device.get(), type, {a, b, c}, {b * row, row, 1}}.on_device();
    return t;
}

/// Attention of `seqs`: the CPU's from the host view of bf16 queries, the GPU cache's from their
/// device view into padded device rows (the padding must stay as the device left it).
bool attend_device_views(const layer_cache& cpu, const layer_cache& dev, const std::vector<int>& seqs, const std::vector<float>& q,
                         std::string& why) {
    const config& c = cpu.cfg();
    const auto n = static_cast<std::int64_t>(seqs.size());
    const std::int64_t Hq = c.num_q_heads, d = c.head_dim, row = d + row_pad;
    const staged_tensor qs = stage(q.data(), n, Hq, d, patternkv::dtype::bf16);
    std::vector<float> a(static_cast<std::size_t>(n * Hq * d));
    cpu.attend(seqs, qs.host_view, patternkv::view_f32(a.data(), n, Hq, d));
    const auto out = gpu::malloc_device<std::uint32_t>(static_cast<std::size_t>(n * Hq * row));  // poisoned: 0xFFFFFFFF
    dev.attend(seqs, qs.device_view, patternkv::tensor_view{out.get(), patternkv::dtype::f32, {n, Hq, d}, {Hq * row, row, 1}}.on_device());
    dev.synchronize();
    for (std::int64_t r = 0; r < n * Hq; ++r) {
        if (std::memcmp(a.data() + r * d, out.get() + r * row, static_cast<std::size_t>(d) * sizeof(float)) != 0)
            return why = fmt::format("attention output (device view): row {} differs", r), false;
        for (std::int64_t k = d; k < row; ++k)
            if (out.get()[r * row + k] != 0xFFFFFFFFu)
                return why = fmt::format("attention output (device view): padding of row {} written", r), false;
    }
    return true;
}

// --- running a case -------------------------------------------------------------------------------

struct case_inputs {
    std::vector<std::vector<float>> k, v;  // per sequence [prompt + steps][H][d]
};

case_inputs make_inputs(const diff_case& c, std::uint64_t salt) {
    const int H = c.cfg.num_kv_heads, d = c.cfg.head_dim;
    case_inputs in;
    for (int i = 0; i < c.batch; ++i) {
        const int T = c.prompts[i] + c.steps;
        in.k.push_back(pkv_test::synthetic_kv(c.seed * 7919 + salt + 2 * i, T, H, d, true));
        in.v.push_back(pkv_test::synthetic_kv(c.seed * 7919 + salt + 2 * i + 1, T, H, d, false));
        if (c.duplicate_rows)
            for (auto* x : {&in.k.back(), &in.v.back()})
                for (int t = 3; t < c.prompts[i]; ++t)
                    std::memcpy(x->data() + static_cast<std::size_t>(t) * H * d, x->data() + static_cast<std::size_t>(t % 3) * H * d,
                                sizeof(float) * H * d);
    }
    return in;
}

/// What the CPU reference is compared with: a backend of the library, or the emulated GPU backend.
struct target {
    std::string name;
    backend kind = backend::cpu;
    bool emulated = false;
    bool int8_mma = true;  ///< emulated: the device has int8 warp matrix products (CUDA sm_80+), else byte dot products only (HIP)

    layer_cache make(const diff_case& c) const {
        if (!emulated) return layer_cache(c.cfg, c.capacity(), kind);
        layer_cache cache(c.cfg, c.capacity(), backend::cpu);
        patternkv::emulated::gpu::emulated_shared_bytes = (c.shared_kib > 0 ? c.shared_kib : 48) * 1024;
        patternkv::emulated::gpu::emulated_int8_mma = int8_mma;
        patternkv::emulated::gpu::emulated_multiprocessors = c.sms > 0 ? c.sms : 1;
        auto& s = const_cast<patternkv::layer_cache_state&>(patternkv::state_of(cache));
        s.impl = patternkv::emulated::make_gpu_backend(s, backend::cpu);
        s.release_host_arrays();  // as a GPU cache's state: no host copy of the data until synced
        s.q_tau = {}, s.qm = {}, s.partials = {};
        return cache;
    }
};

struct runner {
    const diff_case& c;
    layer_cache cpu, gpu;
    std::string why;
    int attends = 0;

    runner(const diff_case& dc, const target& t) : c(dc), cpu(dc.cfg, dc.capacity(), backend::cpu), gpu(t.make(dc)) {}

    bool fail(const std::string& where) {
        why = where + ": " + why;
        return false;
    }

    void prefill(int i, const case_inputs& in) {
        const int H = c.cfg.num_kv_heads, d = c.cfg.head_dim, T = c.prompts[i];
        if (c.device_views) {
            const staged_tensor k = stage(in.k[i].data(), T, H, d, patternkv::dtype::f16),
                                v = stage(in.v[i].data(), T, H, d, patternkv::dtype::bf16);
            cpu.prefill(i, k.host_view, v.host_view);
            gpu.prefill(i, k.device_view, v.device_view);
            gpu.synchronize();
            return;
        }
        for (layer_cache* cache : {&cpu, &gpu})
            cache->prefill(i, patternkv::view_f32(in.k[i].data(), T, H, d), patternkv::view_f32(in.v[i].data(), T, H, d));
    }

    void append(const std::vector<int>& seqs, const std::vector<float>& k, const std::vector<float>& v) {
        const int H = c.cfg.num_kv_heads, d = c.cfg.head_dim;
        const auto n = static_cast<std::int64_t>(seqs.size());
        if (c.device_views) {
            const staged_tensor ks = stage(k.data(), n, H, d, patternkv::dtype::f16), vs = stage(v.data(), n, H, d, patternkv::dtype::bf16);
            cpu.append(seqs, ks.host_view, vs.host_view);
            gpu.append(seqs, ks.device_view, vs.device_view);
            gpu.synchronize();
            return;
        }
        for (layer_cache* cache : {&cpu, &gpu})
            cache->append(seqs, patternkv::view_f32(k.data(), n, H, d), patternkv::view_f32(v.data(), n, H, d));
    }

    bool attend(const std::string& where, std::uint64_t qseed) {
        std::vector<int> seqs;
        for (int i = 0; i < c.batch; ++i)
            if (cpu.size(i) > 0) seqs.push_back(i);
        if (seqs.empty()) return true;
        const auto q = pkv_test::normal_floats(qseed, seqs.size() * c.cfg.num_q_heads * c.cfg.head_dim);
        if (c.device_views) return attend_device_views(cpu, gpu, seqs, q, why) ? (++attends, true) : fail(where);
        std::vector<float> a, b;
        if (!attend_guarded(cpu, seqs, q, a)) return why = "cpu output guard overwritten", fail(where);
        if (!attend_guarded(gpu, seqs, q, b)) return why = "gpu output guard overwritten", fail(where);
        ++attends;
        if (!same_bytes("attention output", a, b, why)) return fail(where);
        return true;
    }

    bool check_state(const std::string& where) {
        if (!same_state(cpu, gpu, why) || !same_memory(cpu, gpu, why)) return fail(where);
        return true;
    }

    bool run() {
        const int H = c.cfg.num_kv_heads, d = c.cfg.head_dim;
        const case_inputs in = make_inputs(c, 0);
        for (int i = 0; i < c.batch; ++i) prefill(i, in);
        if (!check_state("after prefill") || !attend("attention after prefill", c.seed * 31)) return false;
        std::vector<int> pos(c.prompts);  // next input row per sequence
        std::vector<float> k, v;
        for (int step = 0; step < c.steps; ++step) {
            if (c.reset_midway && step == c.steps / 2) {
                const case_inputs fresh = make_inputs(c, 1000003);
                for (layer_cache* cache : {&cpu, &gpu}) cache->reset(0);
                prefill(0, fresh);
                if (!check_state("after reset and prefill")) return false;
            }
            if (c.reload_midway && step == c.steps / 2) {
                auto& g = const_cast<patternkv::layer_cache_state&>(patternkv::state_of(gpu));
                const patternkv::layer_cache_state& s = patternkv::state_of(cpu);
                g.k_codes = s.k_codes, g.v_codes = s.v_codes, g.v_gate = s.v_gate, g.k_sm = s.k_sm, g.v_sm = s.v_sm;
                g.k_index = s.k_index, g.v_index = s.v_index, g.k_bank = s.k_bank, g.v_bank = s.v_bank;
                g.k_bank_size = s.k_bank_size, g.v_bank_size = s.v_bank_size, g.window_k = s.window_k, g.window_v = s.window_v;
                g.pages = s.pages, g.window_count = s.window_count, g.block_table = s.block_table, g.free_pages = s.free_pages;
                ++g.block_table_version;
                g.impl->sync_from_host(g);
                if (!check_state("after sync_from_host")) return false;
            }
            std::vector<int> seqs;
            for (int i = 0; i < c.batch; ++i)
                if (!c.subsets || (i + step) % 3 != 0) seqs.push_back(c.subsets && step % 2 ? c.batch - 1 - i : i);
            if (seqs.empty()) continue;
            k.resize(seqs.size() * H * d);
            v.resize(k.size());
            for (std::size_t j = 0; j < seqs.size(); ++j) {
                const int i = seqs[j];
                const std::size_t row = static_cast<std::size_t>(pos[i]++) * H * d;
                std::memcpy(k.data() + j * H * d, in.k[i].data() + row, sizeof(float) * H * d);
                std::memcpy(v.data() + j * H * d, in.v[i].data() + row, sizeof(float) * H * d);
            }
            const std::int64_t quantized_before = cpu.memory().quantized_tokens;
            append(seqs, k, v);
            const std::string where = fmt::format("step {}", step);
            if (static_cast<std::int64_t>(cpu.memory().quantized_tokens) != quantized_before && !check_state(where + " (flush)"))
                return false;
            if ((step % c.attend_every == 0 || step + 1 == c.steps) && !attend("attention at " + where, c.seed * 31 + step + 1))
                return false;
        }
        return check_state("at the end");
    }
};

struct options {
    bool list = false;
    std::vector<std::string> filters;
    std::vector<target> targets;
};

void usage() {
    fmt::print("usage: test_differential [--list] [--filter SUBSTR]... [--backend cuda|hip|cpu|emulated|emulated-no-mma]...\n");
}

options parse(int argc, char** argv) {
    options o;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        const auto value = [&]() -> std::string {
            if (i + 1 >= argc) {
                usage();
                std::exit(2);
            }
            return argv[++i];
        };
        if (a == "--list")
            o.list = true;
        else if (a == "--filter")
            o.filters.push_back(value());
        else if (a == "--backend") {
            const std::string b = value();
            if (b == "cuda")
                o.targets.push_back({b, backend::cuda});
            else if (b == "hip")
                o.targets.push_back({b, backend::hip});
            else if (b == "cpu")
                o.targets.push_back({b, backend::cpu});
            else if (b == "emulated")
                o.targets.push_back({b, backend::cpu, true});
            else if (b == "emulated-no-mma")
                o.targets.push_back({b, backend::cpu, true, false});
            else {
                usage();
                std::exit(2);
            }
        } else {
            usage();
            std::exit(a == "--help" || a == "-h" ? 0 : 2);
        }
    }
    return o;
}

bool selected(const options& o, const std::string& name) {
    if (o.filters.empty()) return true;
    for (const auto& f : o.filters)
        if (name.find(f) != std::string::npos) return true;
    return false;
}

}  // namespace

namespace {

__global__ void emulation_probe_kernel(int* hits) { ++hits[blockIdx.x * blockDim.x + threadIdx.x]; }

/// Each thread posts its index + 1 in shared memory and reads its neighbour's post, with or without
/// the barrier between: without it, what a thread reads depends on the interleaving.
__global__ void neighbour_kernel(int* out, bool barrier) {
    int* posted = patternkv::emulated::gpu::dynamic_shared<int>();
    const unsigned t = threadIdx.x;
    posted[t] = static_cast<int>(t) + 1;
    if (barrier) __syncthreads();
    out[t] = posted[(t + 1) % blockDim.x];
}

/// The lane folds of every warp of the block over x, each lane's result into sums / maxima.
__global__ void fold_kernel(const float* x, float* sums, float* maxima) {
    namespace gpu = patternkv::emulated::gpu;
    const unsigned t = threadIdx.x;
    sums[t] = gpu::lane_fold<gpu::fold_add>(x[t]);
    maxima[t] = gpu::lane_fold<gpu::fold_max>(x[t]);
}

/// One warp's int8 matrix product D = A B (A 16 x 32 unsigned, B 32 x 8 signed or unsigned bytes,
/// row-major) through gpu::mma_m16n8k32, each lane loading its fragments by the PTX ISA's table for
/// m16n8k32 (written here from the table, apart from warp_mma.hpp's inverse maps).
template <bool b_signed>
__global__ void int8_mma_kernel(const std::uint8_t* a, const std::uint8_t* b, std::int32_t* d) {
    const int lane = static_cast<int>(threadIdx.x), g = lane / 4, c = lane % 4;
    std::uint32_t af[4] = {}, bf[2] = {};
    for (int j = 0; j < 4; ++j)
        for (int i = 0; i < 4; ++i) af[j] |= std::uint32_t{a[(g + 8 * (j % 2)) * 32 + 4 * c + 16 * (j / 2) + i]} << (8 * i);
    for (int j = 0; j < 2; ++j)
        for (int i = 0; i < 4; ++i) bf[j] |= std::uint32_t{b[(4 * c + 16 * j + i) * 8 + g]} << (8 * i);
    std::int32_t acc[4] = {lane, -lane, 7, -7};  // the accumulator is added to
    patternkv::emulated::gpu::mma_m16n8k32<b_signed>(acc, af, bf[0], bf[1]);
    for (int i = 0; i < 4; ++i) d[(g + 8 * (i / 2)) * 8 + 2 * c + i % 2] = acc[i] - (i == 0 ? lane : i == 1 ? -lane : i == 2 ? 7 : -7);
}

/// The emulated int8 matrix product against a plain one, for signed and unsigned B.
std::string check_int8_mma() {
    namespace gpu = patternkv::emulated::gpu;
    std::vector<std::uint8_t> a(16 * 32), b(32 * 8);
    std::uint32_t state = 2024;
    for (auto* v : {&a, &b})
        for (auto& x : *v) x = static_cast<std::uint8_t>((state = state * 1664525u + 1013904223u) >> 24);
    for (const bool b_signed : {true, false}) {
        std::vector<std::int32_t> d(16 * 8, 0);
        gpu::launch_with_barriers(nullptr, b_signed ? int8_mma_kernel<true> : int8_mma_kernel<false>, 1, 32, 0, "int8_mma", a.data(),
                                  b.data(), d.data());
        for (int r = 0; r < 16; ++r)
            for (int col = 0; col < 8; ++col) {
                std::int32_t want = 0;
                for (int k = 0; k < 32; ++k)
                    want +=
                        a[r * 32 + k] * (b_signed ? static_cast<std::int32_t>(static_cast<std::int8_t>(b[k * 8 + col])) : b[k * 8 + col]);
                if (d[r * 8 + col] != want)
                    return fmt::format("B {}: D[{}][{}] is {}, the product {}", b_signed ? "signed" : "unsigned", r, col, d[r * 8 + col],
                                       want);
            }
    }
    return "";
}

/// Cooperative launches (gpu::launch_with_barriers): a missing barrier shows as varying bits, the
/// barrier makes them fixed, dynamic shared memory and device allocations come poisoned, a request
/// past the shared-memory limit names the kernel, and the warp folds give core::fold_lanes' bits
/// in every lane.
std::string check_cooperative_emulation() {
    namespace gpu = patternkv::emulated::gpu;
    constexpr unsigned n = 96;
    std::vector<int> out(n);
    std::vector<std::vector<int>> seen;
    for (int launch = 0; launch < 8; ++launch) {
        gpu::launch_with_barriers(nullptr, neighbour_kernel, 1, n, n * sizeof(int), "neighbour", out.data(), false);
        if (std::find(seen.begin(), seen.end(), out) == seen.end()) seen.push_back(out);
    }
    if (seen.size() < 2) return "eight launches of a kernel missing a barrier gave the same bits";
    for (int launch = 0; launch < 4; ++launch) {
        gpu::launch_with_barriers(nullptr, neighbour_kernel, 1, n, n * sizeof(int), "neighbour", out.data(), true);
        for (unsigned t = 0; t < n; ++t)
            if (out[t] != static_cast<int>((t + 1) % n) + 1) return "a kernel with its barrier read a value nothing posted";
    }
    for (int launch = 0; launch < 4; ++launch) {  // a thread reading before any write sees the poison
        gpu::launch_with_barriers(nullptr, neighbour_kernel, 1, n, n * sizeof(int), "neighbour", out.data(), false);
        for (int v : out)
            if (v != -1 && (v < 1 || v > static_cast<int>(n))) return "shared memory held neither the poison nor a posted value";
    }
    const auto fresh = gpu::malloc_device<std::uint32_t>(16);
    for (std::size_t i = 0; i < 16; ++i)
        if (fresh.get()[i] != 0xFFFFFFFFu) return "a fresh device allocation was not poisoned";
    try {
        gpu::launch_with_barriers(nullptr, neighbour_kernel, 1, n, static_cast<std::size_t>(gpu::max_shared_bytes()) + 1, "greedy",
                                  out.data(), true);
        return "a launch past the shared-memory limit was accepted";
    } catch (const patternkv::error& e) {
        if (std::string(e.what()).find("kernel greedy") == std::string::npos)
            return std::string("unnamed shared-memory error: ") + e.what();
    }
    std::vector<float> x(64), sums(64), maxima(64);
    std::uint32_t state = 12345;
    for (float& v : x) {
        state = state * 1664525u + 1013904223u;
        v = static_cast<float>(static_cast<std::int32_t>(state)) * 1e-7f;  // mixed signs and magnitudes
    }
    gpu::launch_with_barriers(nullptr, fold_kernel, 1, 64, 0, "fold", x.data(), sums.data(), maxima.data());
    for (unsigned w = 0; w < 2; ++w) {
        float acc[patternkv::core::reduction_lanes];
        std::copy(x.begin() + 32 * w, x.begin() + 32 * (w + 1), acc);
        const float total = patternkv::core::fold_lanes(acc), top = *std::max_element(x.begin() + 32 * w, x.begin() + 32 * (w + 1));
        for (unsigned l = 0; l < 32; ++l)
            if (std::memcmp(&sums[32 * w + l], &total, 4) != 0 || maxima[32 * w + l] != top)
                return fmt::format("warp {} lane {}: the fold differs from core::fold_lanes", w, l);
    }
    return "";
}

/// Device-resident calls' errors: views the backend cannot read or mixed with host views are
/// refused at the call; invalid values in device views are reported by synchronize(), once, naming
/// the tensor, the sequence, the head and the channel.
std::string check_device_view_errors() {
    config cfg = base("patternkv", 2, 2, 64, 2, 4);
    diff_case dc;
    dc.cfg = cfg;
    dc.batch = 2;
    dc.prompts = {40, 40};
    const target emulated{"emulated", backend::cpu, true};
    layer_cache dev = emulated.make(dc), host(cfg, dc.capacity(), backend::cpu);
    const auto kv = pkv_test::synthetic_kv(5, 40, 2, 64, true);
    staged_tensor p = stage(kv.data(), 40, 2, 64, patternkv::dtype::f16);
    const auto expect_error = [](const char* what, const std::function<void()>& call, const std::string& needle) -> std::string {
        try {
            call();
        } catch (const patternkv::error& e) {
            if (std::string(e.what()).find(needle) != std::string::npos) return {};
            return fmt::format("{}: error without \"{}\": {}", what, needle, e.what());
        }
        return fmt::format("{}: no error", what);
    };
    std::string why;
    const auto check = [&](std::string r) {
        if (why.empty()) why = std::move(r);
    };
    check(expect_error(
        "device view on a CPU cache", [&] { host.prefill(0, p.device_view, p.device_view); }, "need a GPU backend"));
    check(expect_error(
        "host and device views mixed", [&] { dev.prefill(0, p.host_view, p.device_view); }, "host and device memory"));
    check(expect_error(
        "a stream on a CPU cache", [&] { host.set_stream(&dev); }, "takes no stream"));
    if (!why.empty()) return why;
    dev.prefill(0, p.device_view, p.device_view);
    dev.prefill(1, p.device_view, p.device_view);
    dev.synchronize();
    // a NaN in sequence 1's row (head 1, channel 7) of an append
    std::vector<float> row(2 * 2 * 64, 0.25f);
    row[(1 * 2 + 1) * 64 + 7] = std::numeric_limits<float>::quiet_NaN();
    const staged_tensor r = stage(row.data(), 2, 2, 64, patternkv::dtype::bf16);
    dev.append(r.device_view, r.device_view);
    check(expect_error(
        "NaN in an append's K and V", [&] { dev.synchronize(); },
        "append k (device view): the element of sequence 1, head 1, channel 7 is NaN, Inf or beyond |x| <= 16384; it was stored as 0 "
        "(reset() the sequence); append v (device view): the element of sequence 1, head 1, channel 7"));
    try {
        dev.synchronize();  // reported once
    } catch (const patternkv::error& e) {
        check(fmt::format("a second synchronize() reported again: {}", e.what()));
    }
    std::vector<float> q(2 * 4 * 64, 0.5f);
    q[(0 * 4 + 3) * 64 + 9] = std::numeric_limits<float>::infinity();
    const staged_tensor qs = stage(q.data(), 2, 4, 64, patternkv::dtype::bf16);
    auto out = gpu::malloc_device<float>(2 * 4 * 64 * 2);
    const patternkv::tensor_view strided{out.get(), patternkv::dtype::f32, {2, 4, 64}, {4 * 128, 128, 2}};
    check(expect_error(
        "strided device out", [&] { dev.attend(qs.device_view, strided.on_device()); }, "unit stride"));
    dev.attend(qs.device_view, patternkv::view_f32(out.get(), 2, 4, 64).on_device());
    check(expect_error(
        "Inf in a query", [&] { dev.synchronize(); }, "attend q (device view): the element of sequence 0, query head 3, channel 9"));
    return why;
}

/// The k-means init's select (backends/gpu/kmeans_kernels.hpp): per problem the k first (key, index)
/// pairs in core::kmeans_init_before's order, against a sort, for random keys (one and two radix
/// passes) and keys drawn from a few values (ties at the k-th key, candidates far beyond k).
std::string check_kmeans_select() {
    namespace em = patternkv::emulated;
    const struct {
        int n, k;
        int values;  ///< distinct keys (0: every key drawn afresh)
    } shapes[] = {{300, 16, 0}, {70000, 256, 0}, {3000, 100, 500}, {3000, 100, 7}, {2000, 1, 2}};
    for (const auto& shape : shapes) {
        const int problems = 3, n = shape.n, k = shape.k;
        std::mt19937_64 gen(static_cast<std::uint64_t>(n) * 1000 + shape.values);
        std::vector<std::uint64_t> values(static_cast<std::size_t>(shape.values)), keys(static_cast<std::size_t>(problems) * n);
        for (auto& v : values) v = gen();
        for (auto& key : keys) key = shape.values == 0 ? gen() : values[gen() % values.size()];
        auto keys_dev = em::gpu::malloc_device<std::uint64_t>(keys.size());
        auto state = em::gpu::malloc_device<em::select_state>(problems);
        auto counts = em::gpu::malloc_device<int>(static_cast<std::size_t>(problems) * em::select_digits);
        auto candidates = em::gpu::malloc_device<int>(keys.size());
        auto chosen = em::gpu::malloc_device<int>(static_cast<std::size_t>(problems) * k);
        em::gpu::copy_to_device(nullptr, keys_dev.get(), keys.data(), keys.size());
        em::select_smallest(
            nullptr, {keys_dev.get(), problems, n, k, em::select_passes(n), state.get(), counts.get(), candidates.get(), chosen.get()});
        for (int b = 0; b < problems; ++b) {
            std::vector<std::pair<std::uint64_t, int>> order;
            for (int t = 0; t < n; ++t) order.emplace_back(keys[static_cast<std::size_t>(b) * n + t], t);
            std::sort(order.begin(), order.end());
            for (int r = 0; r < k; ++r)
                if (chosen.get()[b * k + r] != order[r].second)
                    return fmt::format("{} keys ({} values), k {}, problem {}: rank {} is token {}, not {}", n, shape.values, k, b, r,
                                       chosen.get()[b * k + r], order[r].second);
        }
    }
    return "";
}

/// The emulated runtime's own checks (issue 14): launches past the device limits are errors that
/// name the kernel, every thread of a launch runs once, and the order of blocks and threads varies
/// from launch to launch. Returns what is wrong ("" when nothing).
std::string check_emulation() {
    namespace gpu = patternkv::emulated::gpu;
    std::vector<int> hits(8 * 1025, 0);
    for (unsigned threads : {0u, 1025u}) {
        try {
            gpu::launch(nullptr, emulation_probe_kernel, 1, threads, "probe", hits.data());
            return fmt::format("a launch of {} threads per block was accepted", threads);
        } catch (const patternkv::error& e) {
            if (std::string(e.what()).find("kernel probe") == std::string::npos) return std::string("unnamed launch error: ") + e.what();
        }
    }
    hits.assign(8 * 96, 0);
    gpu::launch(nullptr, emulation_probe_kernel, 8, 96, "probe", hits.data());
    for (int h : hits)
        if (h != 1) return "a launch did not run every thread exactly once";
    if (gpu::emulated_order(64) == gpu::emulated_order(64)) return "two launches ran their threads in the same order";
    // kernel timing (gpu::launch_timer): one line per launch while PATTERNKV_GPU_PROFILE names a file
    const std::string profile = (std::filesystem::temp_directory_path() / fmt::format("pkv-profile-{}.txt", ::getpid())).string();
    std::filesystem::remove(profile);
    ::setenv("PATTERNKV_GPU_PROFILE", profile.c_str(), 1);
    gpu::launch(nullptr, emulation_probe_kernel, 1, 32, "timed_probe", hits.data());
    ::unsetenv("PATTERNKV_GPU_PROFILE");
    gpu::launch(nullptr, emulation_probe_kernel, 1, 32, "untimed_probe", hits.data());
    std::ifstream in(profile);
    std::string name, extra;
    double ms = -1.0;
    in >> name >> ms;
    const bool more = static_cast<bool>(in >> extra);
    std::filesystem::remove(profile);
    if (name != "timed_probe" || ms < 0.0 || more) return "the kernel profile did not hold exactly the timed launch";
    return "";
}

}  // namespace

int main(int argc, char** argv) {
    const options opt = parse(argc, argv);
    const std::vector<diff_case> cases = make_cases();
    if (opt.list) {
        for (const auto& c : cases)
            if (selected(opt, c.name())) fmt::print("{}\n", c.name());
        return 0;
    }

    // Which backends to compare against the CPU: asked for, or every GPU backend; say why each is out.
    const std::vector<target> wanted =
        !opt.targets.empty() ? opt.targets : std::vector<target>{{"cuda", backend::cuda}, {"hip", backend::hip}};
    std::vector<target> run_on;
    std::vector<std::string> skipped;
    bool gpu_runs = false;
    for (const target& t : wanted) {
        const std::string why = t.emulated ? std::string() : patternkv::backend_unavailable_reason(t.kind);
        if (why.empty()) {
            run_on.push_back(t);
            gpu_runs |= !t.emulated && t.kind != backend::cpu;
        } else {
            skipped.push_back(fmt::format("{}: {}", t.name, why));
        }
    }
    const char* require = std::getenv("PATTERNKV_REQUIRE_GPU");
    const bool require_gpu = require != nullptr && std::string(require) == "1";
    if (!skipped.empty()) {
        fmt::print(stderr, "\n*** differential tests: backend(s) SKIPPED ***\n");
        for (const auto& s : skipped) fmt::print(stderr, "***   {}\n", s);
        fmt::print(stderr, "\n");
    }
    if (require_gpu && !gpu_runs) {
        fmt::print(stderr, "FAILED: PATTERNKV_REQUIRE_GPU=1 but no GPU backend can run\n");
        return 1;
    }
    if (run_on.empty()) {
        if (require_gpu) {
            fmt::print(stderr, "FAILED: PATTERNKV_REQUIRE_GPU=1 but no GPU backend can run\n");
            return 1;
        }
        fmt::print(stderr, "no backend to compare against the CPU: SKIP (exit 77)\n");
        return 77;
    }

    int passed = 0, failed = 0;
    std::vector<std::string> failures;
    for (const target& b : run_on) {
        const struct {
            const char* name;
            const char* what;
            std::string (*check)();
        } emulation_checks[] = {
            {"emulation/runtime", "launch limits, every thread once, varying orders, kernel timing", check_emulation},
            {"emulation/cooperative", "missing barriers vary, poison, shared-memory limit, warp folds", check_cooperative_emulation},
            {"emulation/device-view-errors", "refused views, NaN/Inf in device views reported by synchronize()", check_device_view_errors},
            {"emulation/kmeans-select", "the init's k smallest keys: one and two radix passes, ties", check_kmeans_select},
            {"emulation/int8-mma", "warp matrix products: fragments by the PTX table, signed and unsigned B", check_int8_mma}};
        for (const auto& e : emulation_checks) {
            if (!b.emulated || !selected(opt, e.name)) continue;
            const std::string why = e.check();
            fmt::print("[{}] {:4} {} ({}){}\n", b.name, why.empty() ? "OK" : "FAIL", e.name, e.what, why.empty() ? "" : "\n       " + why);
            if (why.empty()) {
                ++passed;
            } else {
                ++failed;
                failures.push_back(fmt::format("[{}] {}: {}", b.name, e.name, why));
            }
        }
        for (const auto& c : cases) {
            const std::string name = c.name();
            if (!selected(opt, name)) continue;
            if (c.device_views && !b.emulated) {  // the test has no device allocator of a real GPU
                fmt::print(
                    "[{}] SKIP {} (device views run on emulated device memory only; the device run checks device views with "
                    "attend_bench)\n",
                    b.name, name);
                continue;
            }
            const auto t0 = std::chrono::steady_clock::now();
            bool ok = false;
            std::string why;
            int attends = 0;
            try {
                runner r(c, b);
                ok = r.run();
                why = r.why;
                attends = r.attends;
            } catch (const std::exception& e) {
                why = std::string("exception: ") + e.what();
            }
            const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
            fmt::print("[{}] {:4} {} ({} attentions, {:.0f} ms){}\n", b.name, ok ? "OK" : "FAIL", name, attends, ms,
                       ok ? "" : "\n       " + why);
            std::fflush(stdout);
            if (ok)
                ++passed;
            else {
                ++failed;
                failures.push_back(fmt::format("[{}] {}: {}", b.name, name, why));
            }
        }
    }
    fmt::print("\n{} passed, {} failed\n", passed, failed);
    for (const auto& f : failures) fmt::print("FAILED {}\n", f);
    return failed == 0 ? 0 : 1;
}

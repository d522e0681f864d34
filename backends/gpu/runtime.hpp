#pragma once
// The thin typed GPU runtime wrapper shared by the CUDA and HIP backends, chosen at compile time:
// nvcc sees the CUDA runtime, hipcc the HIP runtime. Everything lives in patternkv::cuda::gpu or
// patternkv::hip::gpu (PKV_GPU_NS), so the two backends' objects never share a symbol: identical
// inline or template names with different bodies would otherwise be merged by the linker.
//
//   gpu::device_buffer<T> b = gpu::malloc_device<T>(n);   // owning, move-only
//   gpu::copy_to_device(stream, b.get(), host, n);                  // enqueued on the stream
//   gpu::check(gpu::synchronize(stream), "append");                 // throws patternkv::error
//   gpu::launch(stream, kernel, blocks, threads, "name", args...);  // <<<>>> + launch check
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <source_location>
#include <string>
#include <utility>

#if defined(PKV_GPU_EMULATION)
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <new>
#include <random>
#include <vector>

#include "emulation.hpp"
#define PKV_GPU_NS emulated
#elif defined(__HIP__)
#include <hip/hip_runtime.h>
#define PKV_GPU_NS hip
#elif defined(__CUDACC__)
#include <cuda_runtime.h>
#define PKV_GPU_NS cuda
#else
#error "backends/gpu headers are compiled by nvcc (CUDA) or hipcc (HIP) only"
#endif

#include <patternkv/error.hpp>

namespace patternkv::PKV_GPU_NS::gpu {

// --- the runtime API, one typed line per call used ---------------------------------------------
#if defined(PKV_GPU_EMULATION)
enum status { success = 0, out_of_memory = 2 };
inline constexpr const char* api_name = "emulated GPU";
inline const char* error_name(status e) { return e == success ? "success" : "out_of_memory"; }
inline const char* error_string(status e) { return error_name(e); }
inline status device_count(int* n) { return *n = 1, success; }
inline status last_error() { return success; }
// Fresh allocations are poisoned (0xFF bytes: NaN floats, all-ones codes), as a real device's are
// not zeroed either: a kernel that reads memory nothing wrote changes the differential test's bits.
inline status raw_malloc(void** p, std::size_t bytes) {
    *p = ::operator new(bytes, std::nothrow);
    return *p != nullptr ? (std::memset(*p, 0xFF, bytes), success) : out_of_memory;
}
inline std::string kernel_image_problem(const void*) { return {}; }
// A block's shared memory on the emulated device: the portable 48 KiB (CUDA without opt-in; AMD's
// LDS is 64 KiB) unless a test sets another device's (an H200 opts in to 227 KiB).
inline int emulated_shared_bytes = 48 * 1024;
inline status current_device(int* dev) { return *dev = 0, success; }
inline status shared_bytes_limit(int* v, int) { return *v = emulated_shared_bytes, success; }
// The emulated device's SMs: one (split blocks serve whole GQA groups) unless a test models a wide
// device (an H200 has 132), where short contexts chunk the groups to cover the SMs.
inline int emulated_multiprocessors = 1;
inline status multiprocessor_count(int* v, int) { return *v = emulated_multiprocessors, success; }
// Whether the emulated device has int8 warp matrix products (a CUDA sm_80+ device): on unless a
// test models one without (HIP, older NVIDIA), whose split blocks sum byte dot products instead.
inline bool emulated_int8_mma = true;
inline bool device_int8_mma() { return emulated_int8_mma; }
inline status raw_free(void* p) { return ::operator delete(p), success; }
inline status raw_host_malloc(void** p, std::size_t bytes) { return (*p = ::operator new(bytes, std::nothrow)) ? success : out_of_memory; }
inline status raw_host_free(void* p) { return ::operator delete(p), success; }
// a stream is a name only: every launch and copy runs to its end before it returns
using stream_t = void*;
inline status raw_memset(void* p, std::size_t bytes, stream_t) { return std::memset(p, 0, bytes), success; }
enum copy_kind { host_to_device, device_to_host, device_to_device };
inline status raw_copy(void* d, const void* s, std::size_t bytes, copy_kind, stream_t) { return std::memcpy(d, s, bytes), success; }
inline status synchronize(stream_t) { return success; }
// events are readings of the host's clock (a launch runs to its end before launch() returns)
using event = std::chrono::steady_clock::time_point;
inline status event_create(event* e) { return *e = {}, success; }
inline status event_record(event& e, stream_t) { return e = std::chrono::steady_clock::now(), success; }
inline status event_wait(event) { return success; }
inline status event_ms(float* ms, event a, event b) { return *ms = std::chrono::duration<float, std::milli>(b - a).count(), success; }
inline status event_destroy(event) { return success; }
#elif defined(__HIP__)
using status = hipError_t;
inline constexpr status success = hipSuccess;
inline constexpr const char* api_name = "HIP";
inline const char* error_name(status e) { return hipGetErrorName(e); }
inline const char* error_string(status e) { return hipGetErrorString(e); }
inline status device_count(int* n) { return hipGetDeviceCount(n); }
inline status last_error() { return hipGetLastError(); }
inline status raw_malloc(void** p, std::size_t bytes) { return hipMalloc(p, bytes); }
inline status raw_free(void* p) { return hipFree(p); }
inline status raw_host_malloc(void** p, std::size_t bytes) { return hipHostMalloc(p, bytes, hipHostMallocDefault); }
inline status raw_host_free(void* p) { return hipHostFree(p); }
using stream_t = hipStream_t;
inline status raw_memset(void* p, std::size_t bytes, stream_t st) { return hipMemsetAsync(p, 0, bytes, st); }
using copy_kind = hipMemcpyKind;
inline constexpr copy_kind host_to_device = hipMemcpyHostToDevice, device_to_host = hipMemcpyDeviceToHost,
                           device_to_device = hipMemcpyDeviceToDevice;
inline status raw_copy(void* d, const void* s, std::size_t bytes, copy_kind k, stream_t st) { return hipMemcpyAsync(d, s, bytes, k, st); }
inline status synchronize(stream_t st) { return hipStreamSynchronize(st); }
inline status current_device(int* dev) { return hipGetDevice(dev); }
inline status shared_bytes_limit(int* v, int dev) { return hipDeviceGetAttribute(v, hipDeviceAttributeMaxSharedMemoryPerBlock, dev); }
inline status multiprocessor_count(int* v, int dev) { return hipDeviceGetAttribute(v, hipDeviceAttributeMultiprocessorCount, dev); }
// AMD's matrix cores have other fragment maps than warp_mma.hpp's: split blocks use v_dot4 there
inline bool device_int8_mma() { return false; }
inline status allow_shared_bytes(const void* kernel, std::size_t bytes) {
    return hipFuncSetAttribute(kernel, hipFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes));
}
using event = hipEvent_t;
inline status event_create(event* e) { return hipEventCreate(e); }
inline status event_record(event e, stream_t st) { return hipEventRecord(e, st); }
inline status event_wait(event e) { return hipEventSynchronize(e); }
inline status event_ms(float* ms, event a, event b) { return hipEventElapsedTime(ms, a, b); }
inline status event_destroy(event e) { return hipEventDestroy(e); }
// Empty when this binary holds code for device 0 that `kernel` can run with; otherwise why not.
inline std::string kernel_image_problem(const void* kernel) {
    hipFuncAttributes a{};
    if (const status e = hipFuncGetAttributes(&a, kernel); e != success) {
        (void)hipGetLastError();
        hipDeviceProp_t prop{};
        const std::string arch = hipGetDeviceProperties(&prop, 0) == success ? prop.gcnArchName : "unknown";
        return std::string("HIP runtime: this build of libpatternkv has no code for device 0 (") + arch + "): " + hipGetErrorName(e) +
               "; rebuild with -Dgpu_hip_archs including it";
    }
    return {};
}
#else
using status = cudaError_t;
inline constexpr status success = cudaSuccess;
inline constexpr const char* api_name = "CUDA";
inline const char* error_name(status e) { return cudaGetErrorName(e); }
inline const char* error_string(status e) { return cudaGetErrorString(e); }
inline status device_count(int* n) { return cudaGetDeviceCount(n); }
inline status last_error() { return cudaGetLastError(); }
inline status raw_malloc(void** p, std::size_t bytes) { return cudaMalloc(p, bytes); }
inline status raw_free(void* p) { return cudaFree(p); }
inline status raw_host_malloc(void** p, std::size_t bytes) { return cudaMallocHost(p, bytes); }
inline status raw_host_free(void* p) { return cudaFreeHost(p); }
using stream_t = cudaStream_t;
inline status raw_memset(void* p, std::size_t bytes, stream_t st) { return cudaMemsetAsync(p, 0, bytes, st); }
using copy_kind = cudaMemcpyKind;
inline constexpr copy_kind host_to_device = cudaMemcpyHostToDevice, device_to_host = cudaMemcpyDeviceToHost,
                           device_to_device = cudaMemcpyDeviceToDevice;
inline status raw_copy(void* d, const void* s, std::size_t bytes, copy_kind k, stream_t st) { return cudaMemcpyAsync(d, s, bytes, k, st); }
inline status synchronize(stream_t st) { return cudaStreamSynchronize(st); }
inline status current_device(int* dev) { return cudaGetDevice(dev); }
// the most a block may opt in to (227 KiB on sm_90), beyond the 48 KiB every launch gets
inline status shared_bytes_limit(int* v, int dev) { return cudaDeviceGetAttribute(v, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev); }
inline status multiprocessor_count(int* v, int dev) { return cudaDeviceGetAttribute(v, cudaDevAttrMultiProcessorCount, dev); }
// mma.sync m16n8k32 on 8-bit integers: sm_80 and later
inline bool device_int8_mma() {
    int dev = 0, major = 0;
    return current_device(&dev) == success && cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) == success &&
           major >= 8;
}
inline status allow_shared_bytes(const void* kernel, std::size_t bytes) {
    return cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes));
}
using event = cudaEvent_t;
inline status event_create(event* e) { return cudaEventCreate(e); }
inline status event_record(event e, stream_t st) { return cudaEventRecord(e, st); }
inline status event_wait(event e) { return cudaEventSynchronize(e); }
inline status event_ms(float* ms, event a, event b) { return cudaEventElapsedTime(ms, a, b); }
inline status event_destroy(event e) { return cudaEventDestroy(e); }
// Empty when this binary holds code (SASS, or PTX the driver can compile) for device 0 that
// `kernel` can run with; otherwise why not, naming the device's architecture.
inline std::string kernel_image_problem(const void* kernel) {
    cudaFuncAttributes a{};
    if (const status e = cudaFuncGetAttributes(&a, kernel); e != success) {
        (void)cudaGetLastError();
        cudaDeviceProp prop{};
        const std::string arch = cudaGetDeviceProperties(&prop, 0) == success
                                     ? std::string(prop.name) + ", sm_" + std::to_string(prop.major) + std::to_string(prop.minor)
                                     : std::string("unknown");
        return std::string("CUDA runtime: this build of libpatternkv has no code for device 0 (") + arch + "): " + cudaGetErrorName(e) +
               "; rebuild with -Dgpu_cuda_archs including it";
    }
    return {};
}
#endif

// --- errors ---------------------------------------------------------------------------------------

/// Throws patternkv::error naming the call, the runtime's error and the source location.
inline void check(status e, const char* what, std::source_location where = std::source_location::current()) {
    if (e == success) return;
    (void)last_error();  // clear a non-sticky error so the next call starts clean
    throw error(std::string("patternkv ") + api_name + " backend: " + what + " failed: " + error_name(e) + " (" + error_string(e) +
                ") at " + where.file_name() + ":" + std::to_string(where.line()));
}

/// Empty when a device can be used and this binary has code for it (probed with `kernel`, one of
/// the backend's kernels); otherwise the runtime's reason (no driver, no device, no code for its
/// architecture...).
inline std::string unavailable_reason(const void* kernel) {
    int n = 0;
    const status e = device_count(&n);
    if (e != success) {
        (void)last_error();
        return std::string(api_name) + " runtime: " + error_name(e) + ": " + error_string(e);
    }
    if (n < 1) return std::string(api_name) + " runtime: no device";
    return kernel_image_problem(kernel);
}

// --- memory ---------------------------------------------------------------------------------------

/// Owning device allocation of n elements of T (move-only; freed in the destructor).
template <class T>
class device_buffer {
public:
    using value_type = T;
    device_buffer() = default;
    device_buffer(T* p, std::size_t n) : p_(p), n_(n) {}
    device_buffer(device_buffer&& o) noexcept : p_(std::exchange(o.p_, nullptr)), n_(std::exchange(o.n_, 0)) {}
    device_buffer& operator=(device_buffer&& o) noexcept {
        if (this != &o) {
            reset();
            p_ = std::exchange(o.p_, nullptr);
            n_ = std::exchange(o.n_, 0);
        }
        return *this;
    }
    device_buffer(const device_buffer&) = delete;
    device_buffer& operator=(const device_buffer&) = delete;
    ~device_buffer() { reset(); }

    T* get() const { return p_; }
    std::size_t size() const { return n_; }
    void reset() {
        if (p_ != nullptr) (void)raw_free(p_);  // never throws from a destructor
        p_ = nullptr;
        n_ = 0;
    }

private:
    T* p_ = nullptr;
    std::size_t n_ = 0;
};

/// n elements of T on the current device (uninitialised). n = 0 gives an empty buffer.
template <class T>
device_buffer<T> malloc_device(std::size_t n, std::source_location where = std::source_location::current()) {
    if (n == 0) return {};
    void* p = nullptr;
    check(raw_malloc(&p, n * sizeof(T)), "device malloc", where);
    return {static_cast<T*>(p), n};
}

/// A buffer of at least n elements: reallocated (contents dropped) only when too small.
template <class T>
void ensure_capacity(device_buffer<T>& b, std::size_t n, std::source_location where = std::source_location::current()) {
    if (b.size() >= n) return;
    b.reset();
    b = malloc_device<T>(n, where);
}

/// Scratch for one call: `b` grown to at least n elements (never shrunk), so a backend's scratch
/// costs no malloc/free per call once it reached its largest size. Emulated, the n elements are
/// poisoned on every use: on a device they hold whatever the last call left there.
template <class T>
T* workspace(device_buffer<T>& b, std::size_t n, std::source_location where = std::source_location::current()) {
    ensure_capacity(b, n, where);
#if defined(PKV_GPU_EMULATION)
    if (n != 0) std::memset(static_cast<void*>(b.get()), 0xFF, n * sizeof(T));
#endif
    return b.get();
}

// Copies and fills are enqueued on `stream`. A copy to pageable host memory returns once it is
// done; one from pageable host memory once the driver staged it (the source may be reused at once).
template <class T>
void copy_to_device(stream_t stream, T* dst, const T* src, std::size_t n, std::source_location where = std::source_location::current()) {
    if (n != 0) check(raw_copy(dst, src, n * sizeof(T), host_to_device, stream), "copy host to device", where);
}
template <class T>
void copy_to_host(stream_t stream, T* dst, const T* src, std::size_t n, std::source_location where = std::source_location::current()) {
    if (n != 0) check(raw_copy(dst, src, n * sizeof(T), device_to_host, stream), "copy device to host", where);
}
template <class T>
void copy_on_device(stream_t stream, T* dst, const T* src, std::size_t n, std::source_location where = std::source_location::current()) {
    if (n != 0) check(raw_copy(dst, src, n * sizeof(T), device_to_device, stream), "copy device to device", where);
}
template <class T>
void zero(stream_t stream, T* p, std::size_t n, std::source_location where = std::source_location::current()) {
    if (n != 0) check(raw_memset(p, n * sizeof(T), stream), "device memset", where);
}

// --- launches -------------------------------------------------------------------------------------

/// Blocks of `threads` covering n work items.
inline unsigned blocks_for(std::int64_t n, int threads) { return static_cast<unsigned>((n + threads - 1) / threads); }

/// The launch limits every CUDA device and HIP's 64-wide devices share: at most 1024 threads per
/// block, at least one, and a grid's x size below 2^31. A launch past them is an error naming the
/// kernel, in emulation too (a device would refuse it at the launch).
inline void check_launch_limits(unsigned blocks, unsigned threads, const char* name) {
    if (threads == 0 || threads > 1024 || blocks > 2147483647u)
        throw error(std::string("patternkv ") + api_name + " backend: kernel " + name + " launched with " + std::to_string(blocks) +
                    " blocks of " + std::to_string(threads) + " threads (limits: 1 to 1024 threads, fewer than 2^31 blocks)");
}

/// An attribute of the current device by query(&value, device), or `otherwise` when the runtime
/// cannot say.
inline int device_attribute(status (*query)(int*, int), int otherwise) {
    int dev = 0, v = 0;
    return current_device(&dev) == success && query(&v, dev) == success ? v : otherwise;
}

/// The dynamic shared memory one block of the current device may use (0 when the runtime cannot
/// say, so that every request is refused with the device's answer in the error).
inline int max_shared_bytes() { return device_attribute(shared_bytes_limit, 0); }

/// The current device's multiprocessors (SMs, CUs); 1 when the runtime cannot say.
inline int multiprocessors() {
    const int n = device_attribute(multiprocessor_count, 1);
    return n > 0 ? n : 1;
}

/// Whether the environment variable `name` is set to "0" (a switch that turns a default off).
inline bool switched_off(const char* name) {
    const char* v = std::getenv(name);
    return v != nullptr && std::string(v) == "0";
}

/// A launch asking for more dynamic shared memory than the device gives one block is an error
/// naming the kernel (the caller sizes its request from max_shared_bytes()).
inline void check_shared_bytes(std::size_t bytes, const char* name) {
    if (bytes == 0) return;  // no runtime query for launches without dynamic shared memory
    const int limit = max_shared_bytes();
    if (bytes > static_cast<std::size_t>(limit))
        throw error(std::string("patternkv ") + api_name + " backend: kernel " + name + " asks for " + std::to_string(bytes) +
                    " bytes of shared memory per block; the device has " + std::to_string(limit));
}

#if defined(PKV_GPU_EMULATION)
/// The order in which emulation runs a launch's blocks or a block's threads: a permutation of
/// 0 .. n - 1 that changes from launch to launch (seeded by a launch counter, so a run repeats).
/// A device runs them in no fixed order, so a kernel whose bits depend on the order (a thread
/// reading what another wrote without a barrier, blocks sharing an output) differs from the CPU
/// reference in some launch, and the differential test sees it.
inline std::vector<unsigned> emulated_order(unsigned n) {
    static std::atomic<std::uint64_t> launches{0};
    std::vector<unsigned> order(n);
    for (unsigned i = 0; i < n; ++i) order[i] = i;
    std::mt19937_64 gen(launches.fetch_add(1) + 1);
    std::shuffle(order.begin(), order.end(), gen);
    return order;
}
#endif

/// Kernel timing for the device run's benchmark (tests/device/attend_bench.cpp): while the
/// environment variable PATTERNKV_GPU_PROFILE names a file, each launch is timed on the device
/// (events around it, waited on at once, so profiled calls run slower) and the line
/// "<kernel name> <milliseconds>" is appended to that file. Unset, a launch costs one getenv.
class launch_timer {
public:
    launch_timer(stream_t stream, const char* name) : path_(std::getenv("PATTERNKV_GPU_PROFILE")), name_(name), stream_(stream) {
        if (path_ == nullptr) return;
        (void)event_create(&start_);
        (void)event_create(&stop_);
        (void)event_record(start_, stream_);
    }
    ~launch_timer() {
        if (path_ == nullptr) return;
        float ms = -1.0f;  // an event call that failed shows as a negative time
        if (event_record(stop_, stream_) == success && event_wait(stop_) == success) (void)event_ms(&ms, start_, stop_);
        (void)event_destroy(start_);
        (void)event_destroy(stop_);
        if (std::FILE* f = std::fopen(path_, "a")) {  // a profile that cannot be written is lost, not an error of the launch
            std::fprintf(f, "%s %.6f\n", name_, static_cast<double>(ms));
            std::fclose(f);
        }
    }
    launch_timer(const launch_timer&) = delete;
    launch_timer& operator=(const launch_timer&) = delete;

private:
    const char* path_;
    const char* name_;
    stream_t stream_;
    event start_{}, stop_{};
};

/// kernel<<<blocks, threads, 0, stream>>>(args...), then a check of the launch itself (errors
/// during execution surface at the next synchronizing call). Nothing to do for 0 blocks. The
/// kernel must not use __syncthreads (see launch_with_barriers).
template <class... Params, class... Args>
void launch(stream_t stream, void (*kernel)(Params...), unsigned blocks, unsigned threads, const char* name, Args&&... args) {
    if (blocks == 0) return;
    check_launch_limits(blocks, threads, name);
    const launch_timer timer(stream, name);
#if defined(PKV_GPU_EMULATION)
    blockDim = {threads, 1, 1};
    const auto thread_order = emulated_order(threads);
    for (unsigned b : emulated_order(blocks))
        for (unsigned t : thread_order) {
            blockIdx = {b, 0, 0};
            threadIdx = {t, 0, 0};
            kernel(args...);
        }
#else
    kernel<<<blocks, threads, 0, stream>>>(std::forward<Args>(args)...);
    check(last_error(), name);
#endif
}

/// launch() for a kernel whose threads meet at barriers (__syncthreads, the lane folds of
/// block_primitives.hpp), with `shared_bytes` of dynamic shared memory (gpu::dynamic_shared; at
/// most max_shared_bytes()). Emulated, each block's threads are fibers run one at a time in a
/// varying interleaving (emulation.hpp), and blocks run in a varying order.
template <class... Params, class... Args>
void launch_with_barriers(stream_t stream, void (*kernel)(Params...), unsigned blocks, unsigned threads, std::size_t shared_bytes,
                          const char* name, Args&&... args) {
    if (blocks == 0) return;
    check_launch_limits(blocks, threads, name);
    check_shared_bytes(shared_bytes, name);
    const launch_timer timer(stream, name);
#if defined(PKV_GPU_EMULATION)
    static std::atomic<std::uint64_t> block_seeds{0};
    std::vector<unsigned char> shared(shared_bytes);
    blockDim = {threads, 1, 1};
    pkv_emulated_dynamic_shared = shared.data();
    auto body = [&] { kernel(args...); };
    for (unsigned b : emulated_order(blocks)) {
        std::fill(shared.begin(), shared.end(), 0xFF);  // uninitialised on a device
        blockIdx = {b, 0, 0};
        pkv_emulated_block block(threads, block_seeds.fetch_add(1) + 1);
        block.run(body);
    }
#else
    if (shared_bytes > 48 * 1024) check(allow_shared_bytes(reinterpret_cast<const void*>(kernel), shared_bytes), name);
    kernel<<<blocks, threads, shared_bytes, stream>>>(std::forward<Args>(args)...);
    check(last_error(), name);
#endif
}

}  // namespace patternkv::PKV_GPU_NS::gpu

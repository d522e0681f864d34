/// @file gguf_reader.cpp
/// GGUF parsing. Every read goes through `cursor`, which checks the remaining bytes first, so a
/// truncated or lying file ends in an eval_error naming what was being read, never a crash.

#include "gguf_reader.hpp"

#include <bit>
#include <cstring>
#include <fstream>

#include <fmt/format.h>

#include "eval_error.hpp"

namespace pkveval {
namespace {

constexpr std::uint64_t max_string_bytes = 1ull << 30;

class cursor {
public:
    explicit cursor(std::span<const std::uint8_t> b) : b_(b) {}

    void need(std::uint64_t n, const char* what) const {
        if (n > b_.size() - pos_)
            throw eval_error(
                fmt::format("truncated GGUF file: reading {} at offset {} needs {} bytes, {} left", what, pos_, n, b_.size() - pos_));
    }
    template <class T>
    T read(const char* what) {
        need(sizeof(T), what);
        T v;
        std::memcpy(&v, b_.data() + pos_, sizeof(T));
        pos_ += sizeof(T);
        return v;  // GGUF is little-endian, as are the hosts this runs on
    }
    std::string read_string(const char* what) {
        const auto n = read<std::uint64_t>(what);
        if (n > max_string_bytes) throw eval_error(fmt::format("corrupt GGUF file: {} of length {} at offset {}", what, n, pos_));
        need(n, what);
        std::string s(reinterpret_cast<const char*>(b_.data() + pos_), n);
        pos_ += n;
        return s;
    }
    std::uint64_t pos() const { return pos_; }
    std::uint64_t left() const { return b_.size() - pos_; }

private:
    std::span<const std::uint8_t> b_;
    std::uint64_t pos_ = 0;
};

std::uint64_t scalar_size(gguf_type t) {
    switch (t) {
        case gguf_type::u8:
        case gguf_type::i8:
        case gguf_type::boolean:
            return 1;
        case gguf_type::u16:
        case gguf_type::i16:
            return 2;
        case gguf_type::u32:
        case gguf_type::i32:
        case gguf_type::f32:
            return 4;
        case gguf_type::u64:
        case gguf_type::i64:
        case gguf_type::f64:
            return 8;
        default:
            return 0;
    }
}

double read_number(cursor& c, gguf_type t, const char* what) {
    switch (t) {
        case gguf_type::u8:
            return c.read<std::uint8_t>(what);
        case gguf_type::i8:
            return c.read<std::int8_t>(what);
        case gguf_type::boolean:
            return c.read<std::uint8_t>(what) != 0 ? 1.0 : 0.0;
        case gguf_type::u16:
            return c.read<std::uint16_t>(what);
        case gguf_type::i16:
            return c.read<std::int16_t>(what);
        case gguf_type::u32:
            return c.read<std::uint32_t>(what);
        case gguf_type::i32:
            return c.read<std::int32_t>(what);
        case gguf_type::f32:
            return c.read<float>(what);
        case gguf_type::u64:
            return static_cast<double>(c.read<std::uint64_t>(what));
        case gguf_type::i64:
            return static_cast<double>(c.read<std::int64_t>(what));
        case gguf_type::f64:
            return c.read<double>(what);
        default:
            throw eval_error("internal: read_number on a non-numeric GGUF type");
    }
}

void read_value(cursor& c, gguf_type t, gguf_value& out, int depth, const std::string& key) {
    const std::uint32_t raw = static_cast<std::uint32_t>(t);
    if (raw > 12) throw eval_error(fmt::format("corrupt GGUF file: metadata '{}' has unknown value type {}", key, raw));
    out.type = t;
    if (t == gguf_type::string) {
        out.str = c.read_string("metadata string value");
        return;
    }
    if (t != gguf_type::array) {
        out.number = read_number(c, t, "metadata value");
        return;
    }
    const auto et = static_cast<gguf_type>(c.read<std::uint32_t>("array element type"));
    const auto n = c.read<std::uint64_t>("array length");
    out.elem_type = et;
    if (static_cast<std::uint32_t>(et) > 12)
        throw eval_error(
            fmt::format("corrupt GGUF file: metadata '{}' has unknown array element type {}", key, static_cast<std::uint32_t>(et)));
    // every element takes at least one byte (strings 8), so a count beyond the bytes left is corrupt
    const std::uint64_t min_size = et == gguf_type::string ? 8 : et == gguf_type::array ? 12 : scalar_size(et);
    if (n > c.left() / min_size)
        throw eval_error(fmt::format("truncated GGUF file: array '{}' claims {} elements, only {} bytes left", key, n, c.left()));
    if (et == gguf_type::string) {
        out.strings.reserve(n);
        for (std::uint64_t i = 0; i < n; ++i) out.strings.push_back(c.read_string("array string"));
    } else if (et == gguf_type::array) {
        if (depth > 4) throw eval_error(fmt::format("corrupt GGUF file: metadata '{}' nests arrays too deeply", key));
        gguf_value skipped;
        for (std::uint64_t i = 0; i < n; ++i) read_value(c, et, skipped, depth + 1, key);
    } else {
        out.numbers.reserve(n);
        for (std::uint64_t i = 0; i < n; ++i) out.numbers.push_back(read_number(c, et, "array element"));
    }
}

struct block_info {
    std::uint64_t elems, bytes;
};

block_info block_of(std::uint32_t type) {
    switch (static_cast<ggml_type>(type)) {
        case ggml_type::f32:
            return {1, 4};
        case ggml_type::f16:
        case ggml_type::bf16:
            return {1, 2};
        case ggml_type::q4_0:
            return {32, 18};
        case ggml_type::q4_1:
            return {32, 20};
        case ggml_type::q5_0:
            return {32, 22};
        case ggml_type::q5_1:
            return {32, 24};
        case ggml_type::q8_0:
            return {32, 34};
        case ggml_type::q8_1:
            return {32, 36};
        case ggml_type::q2_k:
            return {256, 84};
        case ggml_type::q3_k:
            return {256, 110};
        case ggml_type::q4_k:
            return {256, 144};
        case ggml_type::q5_k:
            return {256, 176};
        case ggml_type::q6_k:
            return {256, 210};
        case ggml_type::q8_k:
            return {256, 292};
    }
    return {0, 0};
}

}  // namespace

std::string ggml_type_name(std::uint32_t type) {
    switch (static_cast<ggml_type>(type)) {
        case ggml_type::f32:
            return "f32";
        case ggml_type::f16:
            return "f16";
        case ggml_type::bf16:
            return "bf16";
        case ggml_type::q4_0:
            return "q4_0";
        case ggml_type::q4_1:
            return "q4_1";
        case ggml_type::q5_0:
            return "q5_0";
        case ggml_type::q5_1:
            return "q5_1";
        case ggml_type::q8_0:
            return "q8_0";
        case ggml_type::q8_1:
            return "q8_1";
        case ggml_type::q2_k:
            return "q2_k";
        case ggml_type::q3_k:
            return "q3_k";
        case ggml_type::q4_k:
            return "q4_k";
        case ggml_type::q5_k:
            return "q5_k";
        case ggml_type::q6_k:
            return "q6_k";
        case ggml_type::q8_k:
            return "q8_k";
    }
    return fmt::format("type {}", type);
}

std::uint64_t ggml_type_bytes(std::uint32_t type, std::uint64_t elements) {
    const block_info b = block_of(type);
    if (b.elems == 0 || elements % b.elems != 0) return 0;
    return elements / b.elems * b.bytes;
}

std::uint64_t gguf_tensor_info::elements() const {
    std::uint64_t n = 1;
    for (auto d : dims) n *= d;
    return n;
}

gguf_file::gguf_file(std::vector<std::uint8_t> bytes) : bytes_(std::move(bytes)) {
    cursor c(bytes_);
    c.need(4, "magic");
    if (std::memcmp(bytes_.data(), "GGUF", 4) != 0) throw eval_error("not a GGUF file (bad magic)");
    (void)c.read<std::uint32_t>("magic");
    version_ = c.read<std::uint32_t>("version");
    if (version_ != 2 && version_ != 3)
        throw eval_error(fmt::format("unsupported GGUF version {} (this reader supports 2 and 3{})", version_,
                                     version_ > 0xffff ? "; a big-endian file?" : ""));
    const auto n_tensors = c.read<std::uint64_t>("tensor count");
    const auto n_kv = c.read<std::uint64_t>("metadata count");
    // a key/value takes at least 8 + 4 + 1 bytes, a tensor entry at least 8 + 4 + 4 + 8
    if (n_kv > c.left() / 13)
        throw eval_error(fmt::format("truncated GGUF file: {} metadata entries cannot fit in {} bytes", n_kv, c.left()));
    for (std::uint64_t i = 0; i < n_kv; ++i) {
        std::string key = c.read_string("metadata key");
        const auto t = static_cast<gguf_type>(c.read<std::uint32_t>("metadata value type"));
        gguf_value v;
        read_value(c, t, v, 0, key);
        kv_[key] = std::move(v);
    }
    if (n_tensors > c.left() / 24)
        throw eval_error(fmt::format("truncated GGUF file: {} tensor entries cannot fit in {} bytes", n_tensors, c.left()));
    tensors_.reserve(n_tensors);
    for (std::uint64_t i = 0; i < n_tensors; ++i) {
        gguf_tensor_info t;
        t.name = c.read_string("tensor name");
        const auto nd = c.read<std::uint32_t>("tensor rank");
        if (nd < 1 || nd > 4) throw eval_error(fmt::format("corrupt GGUF file: tensor '{}' has rank {}", t.name, nd));
        for (std::uint32_t d = 0; d < nd; ++d) {
            const auto e = c.read<std::uint64_t>("tensor dimension");
            if (e == 0 || e > (1ull << 40)) throw eval_error(fmt::format("corrupt GGUF file: tensor '{}' dimension {} = {}", t.name, d, e));
            t.dims.push_back(e);
        }
        t.type = c.read<std::uint32_t>("tensor type");
        t.offset = c.read<std::uint64_t>("tensor offset");
        tensors_.push_back(std::move(t));
    }
    std::uint64_t alignment = 32;
    if (has("general.alignment")) {
        const double a = number("general.alignment");
        if (!(a >= 1 && a <= 65536) || !std::has_single_bit(static_cast<std::uint64_t>(a)))
            throw eval_error(fmt::format("corrupt GGUF file: general.alignment = {}", a));
        alignment = static_cast<std::uint64_t>(a);
    }
    data_offset_ = (c.pos() + alignment - 1) / alignment * alignment;
    for (const auto& t : tensors_) {
        const std::uint64_t size = ggml_type_bytes(t.type, t.elements());
        if (size == 0) continue;  // unknown type: checked when (if) the tensor is used
        if (t.offset > bytes_.size() || data_offset_ > bytes_.size() - t.offset || size > bytes_.size() - data_offset_ - t.offset)
            throw eval_error(
                fmt::format("truncated GGUF file: tensor '{}' ({} bytes at data offset {}) runs past the end of the {}-byte file", t.name,
                            size, t.offset, bytes_.size()));
    }
}

gguf_file gguf_file::load(const std::string& path) {
    std::ifstream f(path, std::ios::binary | std::ios::ate);
    if (!f) throw eval_error(fmt::format("cannot open model file '{}'", path));
    const auto size = static_cast<std::size_t>(f.tellg());
    std::vector<std::uint8_t> bytes(size);
    f.seekg(0);
    if (!f.read(reinterpret_cast<char*>(bytes.data()), static_cast<std::streamsize>(size)))
        throw eval_error(fmt::format("cannot read model file '{}'", path));
    return gguf_file(std::move(bytes));
}

const gguf_value& gguf_file::get(const std::string& key) const {
    auto it = kv_.find(key);
    if (it == kv_.end()) throw eval_error(fmt::format("GGUF metadata key '{}' is missing", key));
    return it->second;
}

double gguf_file::number(const std::string& key) const {
    const gguf_value& v = get(key);
    if (v.type == gguf_type::string || v.type == gguf_type::array)
        throw eval_error(fmt::format("GGUF metadata key '{}' is not a number", key));
    return v.number;
}

double gguf_file::number_or(const std::string& key, double fallback) const { return has(key) ? number(key) : fallback; }

const std::string& gguf_file::string(const std::string& key) const {
    const gguf_value& v = get(key);
    if (v.type != gguf_type::string) throw eval_error(fmt::format("GGUF metadata key '{}' is not a string", key));
    return v.str;
}

const gguf_tensor_info* gguf_file::find_tensor(const std::string& name) const {
    for (const auto& t : tensors_)
        if (t.name == name) return &t;
    return nullptr;
}

std::span<const std::uint8_t> gguf_file::tensor_bytes(const gguf_tensor_info& t) const {
    const std::uint64_t size = ggml_type_bytes(t.type, t.elements());
    if (size == 0) throw eval_error(fmt::format("tensor '{}' has type {}, which this runner cannot read", t.name, ggml_type_name(t.type)));
    return std::span<const std::uint8_t>(bytes_).subspan(data_offset_ + t.offset, size);
}

}  // namespace pkveval

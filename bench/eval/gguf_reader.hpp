#pragma once
/// @file gguf_reader.hpp
/// A bounds-checked reader of GGUF v2/v3 files: metadata key/values and tensor directory.

#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <vector>

namespace pkveval {

/// GGUF metadata value types (gguf.md).
enum class gguf_type : std::uint32_t {
    u8 = 0,
    i8 = 1,
    u16 = 2,
    i16 = 3,
    u32 = 4,
    i32 = 5,
    f32 = 6,
    boolean = 7,
    string = 8,
    array = 9,
    u64 = 10,
    i64 = 11,
    f64 = 12,
};

/// One metadata value. Scalars fill `number` (and `str` for strings); arrays fill `numbers` or
/// `strings` according to `elem_type`. Nested arrays are skipped (kept empty).
struct gguf_value {
    gguf_type type = gguf_type::u8;
    gguf_type elem_type = gguf_type::u8;  ///< for arrays
    double number = 0.0;
    std::string str;
    std::vector<double> numbers;
    std::vector<std::string> strings;
};

/// ggml tensor types this runner knows the block size of.
enum class ggml_type : std::uint32_t {
    f32 = 0,
    f16 = 1,
    q4_0 = 2,
    q4_1 = 3,
    q5_0 = 6,
    q5_1 = 7,
    q8_0 = 8,
    q8_1 = 9,
    q2_k = 10,
    q3_k = 11,
    q4_k = 12,
    q5_k = 13,
    q6_k = 14,
    q8_k = 15,
    bf16 = 30,
};

/// Name of a ggml type ("q4_1"), or "type N" for unknown ones.
std::string ggml_type_name(std::uint32_t type);

/// One entry of the tensor directory. dims[0] is the contiguous (innermost) dimension.
struct gguf_tensor_info {
    std::string name;
    std::vector<std::uint64_t> dims;
    std::uint32_t type = 0;
    std::uint64_t offset = 0;  ///< relative to the start of the data section
    std::uint64_t elements() const;
};

/// A parsed GGUF file that owns its bytes.
class gguf_file {
public:
    /// Parses `bytes`; throws eval_error naming the field and offset for truncated or corrupt input
    /// and for versions other than 2 and 3.
    explicit gguf_file(std::vector<std::uint8_t> bytes);
    /// Reads and parses a file; throws eval_error when it cannot be opened.
    static gguf_file load(const std::string& path);

    std::uint32_t version() const { return version_; }
    const std::map<std::string, gguf_value>& metadata() const { return kv_; }
    const std::vector<gguf_tensor_info>& tensors() const { return tensors_; }

    bool has(const std::string& key) const { return kv_.count(key) != 0; }
    /// Value of a metadata key; throws when missing.
    const gguf_value& get(const std::string& key) const;
    /// Numeric value of a key; throws when missing or not numeric.
    double number(const std::string& key) const;
    /// Numeric value or `fallback` when the key is missing.
    double number_or(const std::string& key, double fallback) const;
    /// String value of a key; throws when missing or not a string.
    const std::string& string(const std::string& key) const;

    /// Tensor by name, or nullptr.
    const gguf_tensor_info* find_tensor(const std::string& name) const;
    /// The raw bytes of a tensor (bounds were checked at parse time for known types).
    std::span<const std::uint8_t> tensor_bytes(const gguf_tensor_info& t) const;

private:
    std::vector<std::uint8_t> bytes_;
    std::uint32_t version_ = 0;
    std::map<std::string, gguf_value> kv_;
    std::vector<gguf_tensor_info> tensors_;
    std::uint64_t data_offset_ = 0;
};

/// Bytes taken by `elements` values of `type` (0 when the type is unknown or the count is not a
/// whole number of blocks).
std::uint64_t ggml_type_bytes(std::uint32_t type, std::uint64_t elements);

/// Converts `elements` values of a tensor of the given type to fp32. Supports f32, f16, bf16,
/// q4_0, q4_1, q5_0, q5_1, q8_0 and the K-quants q2_k, q3_k, q4_k, q5_k, q6_k (bit-identical to
/// ggml's dequantization); throws eval_error for the others (naming the type), when `elements` is
/// not a whole number of blocks, or when `src` is shorter than ggml_type_bytes(type, elements).
void dequantize(std::uint32_t type, std::span<const std::uint8_t> src, std::uint64_t elements, float* dst);

/// IEEE binary16 bits to float.
float half_to_float(std::uint16_t h);

}  // namespace pkveval

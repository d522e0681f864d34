/// @file gguf_tensor_dump.cpp
/// gguf-tensor-dump MODEL.gguf TENSOR_NAME FIRST_ROW ROWS OUT.f32
/// Dequantizes rows [FIRST_ROW, FIRST_ROW + ROWS) of a tensor (a row is dims[0] contiguous values)
/// with the runner's decoder and writes them as raw little-endian float32. Used by
/// tools/check-gguf-dequant.py to compare against an independent decoder.

#include <charconv>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <fstream>
#include <string>
#include <string_view>
#include <vector>

#include <fmt/format.h>

#include "eval_error.hpp"
#include "gguf_reader.hpp"

namespace {

std::uint64_t parse_count(std::string_view s, const char* what) {
    std::uint64_t v = 0;
    const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (s.empty() || ec != std::errc() || end != s.data() + s.size())
        throw pkveval::eval_error(fmt::format("{} must be a non-negative integer, got '{}'", what, s));
    return v;
}

int run(int argc, char** argv) {
    if (argc != 6) {
        fmt::print(stderr,
                   "usage: gguf-tensor-dump MODEL.gguf TENSOR_NAME FIRST_ROW ROWS OUT.f32\n"
                   "writes the dequantized rows as raw little-endian float32\n");
        return 2;
    }
    const std::string model = argv[1], name = argv[2], out_path = argv[5];
    const std::uint64_t first = parse_count(argv[3], "FIRST_ROW"), rows = parse_count(argv[4], "ROWS");

    const pkveval::gguf_file g = pkveval::gguf_file::load(model);
    const pkveval::gguf_tensor_info* t = g.find_tensor(name);
    if (t == nullptr) throw pkveval::eval_error(fmt::format("no tensor named '{}' in '{}'", name, model));
    const std::uint64_t cols = t->dims[0], total_rows = t->elements() / cols;
    if (first > total_rows || rows > total_rows - first)
        throw pkveval::eval_error(fmt::format("rows [{}, {}) are out of range: tensor '{}' has {} rows of {} values", first, first + rows,
                                              name, total_rows, cols));
    const std::uint64_t row_bytes = pkveval::ggml_type_bytes(t->type, cols);
    if (row_bytes == 0)
        throw pkveval::eval_error(fmt::format("tensor '{}' of type {}: a row of {} values is not a whole number of blocks", name,
                                              pkveval::ggml_type_name(t->type), cols));
    const std::span<const std::uint8_t> bytes = g.tensor_bytes(*t);

    std::vector<float> out(rows * cols);
    for (std::uint64_t r = 0; r < rows; ++r)
        pkveval::dequantize(t->type, bytes.subspan((first + r) * row_bytes, row_bytes), cols, out.data() + r * cols);

    std::ofstream f(out_path, std::ios::binary);
    if (!f) throw pkveval::eval_error(fmt::format("cannot open output file '{}'", out_path));
    f.write(reinterpret_cast<const char*>(out.data()), static_cast<std::streamsize>(out.size() * sizeof(float)));
    if (!f) throw pkveval::eval_error(fmt::format("cannot write output file '{}'", out_path));
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    try {
        return run(argc, argv);
    } catch (const std::exception& e) {
        fmt::print(stderr, "gguf-tensor-dump: {}\n", e.what());
        return 1;
    }
}

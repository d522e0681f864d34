/// @file gguf_tokenizer.cpp
/// The tokenizer stored in a GGUF file's tokenizer.ggml.* metadata.

#include "gguf_tokenizer.hpp"

#include <fmt/format.h>

#include "eval_error.hpp"

namespace pkveval {
namespace {

bpe_vocab read_vocab(const gguf_file& g) {
    const std::string kind = g.string("tokenizer.ggml.model");
    if (kind != "gpt2")
        throw eval_error(fmt::format("tokenizer.ggml.model '{}' is not supported (only byte-level BPE, 'gpt2')", kind));
    bpe_vocab v;
    v.tokens = g.get("tokenizer.ggml.tokens").strings;
    v.merges = g.get("tokenizer.ggml.merges").strings;
    if (g.has("tokenizer.ggml.token_type"))
        for (double t : g.get("tokenizer.ggml.token_type").numbers) v.token_types.push_back(static_cast<int>(t));
    v.pre = g.has("tokenizer.ggml.pre") ? g.string("tokenizer.ggml.pre") : "default";
    v.bos = static_cast<int>(g.number_or("tokenizer.ggml.bos_token_id", -1));
    v.eos = static_cast<int>(g.number_or("tokenizer.ggml.eos_token_id", -1));
    v.unk = static_cast<int>(g.number_or("tokenizer.ggml.unknown_token_id", -1));
    v.add_bos = g.number_or("tokenizer.ggml.add_bos_token", 1.0) != 0.0;
    const int n = static_cast<int>(v.tokens.size());
    if (n == 0) throw eval_error("GGUF tokenizer has no tokens");
    for (int id : {v.bos, v.eos, v.unk})
        if (id >= n) throw eval_error(fmt::format("GGUF tokenizer special id {} is outside the {}-token vocabulary", id, n));
    return v;
}

} // namespace

std::unique_ptr<tokenizer> make_gguf_tokenizer(const gguf_file& g) { return make_bpe_tokenizer(read_vocab(g)); }

std::unique_ptr<tokenizer> load_gguf_tokenizer(const std::string& path) { return make_gguf_tokenizer(gguf_file::load(path)); }

} // namespace pkveval

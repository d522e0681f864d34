/// @file gguf_tokenizer.cpp
/// The tokenizer stored in a GGUF file's tokenizer.ggml.* metadata: byte-level BPE ("gpt2") or
/// SentencePiece-style BPE ("llama"), with llama.cpp's defaults for keys a file leaves out.

#include "gguf_tokenizer.hpp"

#include <fmt/format.h>

#include "eval_error.hpp"

namespace pkveval {
namespace {

std::vector<int> token_types(const gguf_file& g) {
    std::vector<int> types;
    if (g.has("tokenizer.ggml.token_type"))
        for (double t : g.get("tokenizer.ggml.token_type").numbers) types.push_back(static_cast<int>(t));
    return types;
}

bpe_vocab read_bpe_vocab(const gguf_file& g) {
    bpe_vocab v;
    v.tokens = g.get("tokenizer.ggml.tokens").strings;
    v.merges = g.get("tokenizer.ggml.merges").strings;
    v.token_types = token_types(g);
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

/// llama.cpp's reading of an SPM vocabulary: BOS 1, EOS 2, UNK 0, add_bos and add_space_prefix
/// true unless the file says otherwise; scores may be float32 or int32 (both arrive as numbers).
sp_vocab read_sp_vocab(const gguf_file& g) {
    sp_vocab v;
    v.tokens = g.get("tokenizer.ggml.tokens").strings;
    const std::size_t n = v.tokens.size();
    if (n == 0) throw eval_error("GGUF tokenizer has no tokens");
    if (g.has("tokenizer.ggml.scores")) {
        const auto& s = g.get("tokenizer.ggml.scores").numbers;
        if (s.size() != n) throw eval_error(fmt::format("GGUF tokenizer has {} scores for {} tokens", s.size(), n));
        v.scores.assign(s.begin(), s.end());
    }
    v.token_types = token_types(g);
    if (!v.token_types.empty() && v.token_types.size() != n)
        throw eval_error(fmt::format("GGUF tokenizer has {} token types for {} tokens", v.token_types.size(), n));
    v.bos = static_cast<int>(g.number_or("tokenizer.ggml.bos_token_id", 1));
    v.eos = static_cast<int>(g.number_or("tokenizer.ggml.eos_token_id", 2));
    v.unk = static_cast<int>(g.number_or("tokenizer.ggml.unknown_token_id", 0));
    for (int id : {v.bos, v.eos, v.unk})
        if (id < 0 || static_cast<std::size_t>(id) >= n)
            throw eval_error(fmt::format("GGUF tokenizer special id {} is outside the {}-token vocabulary", id, n));
    v.add_bos = g.number_or("tokenizer.ggml.add_bos_token", 1.0) != 0.0;
    v.add_space_prefix = g.number_or("tokenizer.ggml.add_space_prefix", 1.0) != 0.0;
    v.escape_whitespace = true;
    return v;
}

}  // namespace

std::unique_ptr<tokenizer> make_gguf_tokenizer(const gguf_file& g) {
    const std::string kind = g.string("tokenizer.ggml.model");
    if (kind == "gpt2") return make_bpe_tokenizer(read_bpe_vocab(g));
    if (kind == "llama") return make_sp_tokenizer(read_sp_vocab(g));
    throw eval_error(
        fmt::format("tokenizer.ggml.model '{}' is not supported (only 'gpt2': byte-level BPE, and 'llama': SentencePiece)", kind));
}

std::unique_ptr<tokenizer> load_gguf_tokenizer(const std::string& path) { return make_gguf_tokenizer(gguf_file::load(path)); }

}  // namespace pkveval

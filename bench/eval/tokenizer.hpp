#pragma once
/// @file tokenizer.hpp
/// The tokenizer interface the runner uses, and its two implementations' factories.

#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace pkveval {

/// Text <-> token ids.
class tokenizer {
public:
    virtual ~tokenizer() = default;
    /// Token ids of `text`; BOS first when `bos`. `special`: recognise control tokens written in the
    /// text (e.g. "<|im_start|>") instead of encoding their characters.
    virtual std::vector<int> encode(std::string_view text, bool bos, bool special = false) const = 0;
    /// Bytes of token `id` as it appears after token `prev` (-1 at the start).
    virtual std::string decode(int id, int prev) const = 0;
    virtual int bos_id() const = 0;
    virtual int eos_id() const = 0;
    virtual int vocab_size() const = 0;
    /// Whether the model expects BOS in front of a text (metadata of the model).
    virtual bool adds_bos() const { return true; }

    /// Concatenated decode of a sequence (prev is tracked).
    std::string decode_all(const std::vector<int>& ids) const;
};

/// llama2.c tokenizer file (tokenizer.bin format), `vocab_size` entries.
std::unique_ptr<tokenizer> load_llama2c_tokenizer(const std::string& path, int vocab_size);

/// Byte-level BPE (GPT-2 style): `tokens` in byte-to-unicode form, `merges` as "a b", control
/// tokens (token type 3) listed by id, pre-tokenizer by llama.cpp name ("smollm", "gpt2", ...).
struct bpe_vocab {
    std::vector<std::string> tokens;
    std::vector<std::string> merges;
    std::vector<int> token_types;  ///< may be empty; 3 = control
    std::string pre = "gpt2";
    int bos = -1, eos = -1, unk = -1;
    bool add_bos = true;
};
std::unique_ptr<tokenizer> make_bpe_tokenizer(const bpe_vocab& vocab);

} // namespace pkveval

#pragma once
/// @file tokenizer.hpp
/// The tokenizer interface the runner uses, and its two implementations' factories
/// (SentencePiece-style BPE: sp_tokenizer.cpp; byte-level BPE: bpe_tokenizer.cpp).

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

/// llama2.c tokenizer file (tokenizer.bin format), `vocab_size` entries: a SentencePiece-style
/// vocabulary (below) with spaces spelled ' ', a dummy prefix, BOS 1, EOS 2, UNK 0.
std::unique_ptr<tokenizer> load_llama2c_tokenizer(const std::string& path, int vocab_size);

/// SentencePiece-style BPE vocabulary as llama.cpp's SPM tokenizer reads it (GGUF
/// tokenizer.ggml.model = "llama"; llama2.c's tokenizer.bin is the same with no token types).
/// Encoding: spaces are spelled U+2581 when `escape_whitespace`; user-defined tokens (and
/// control/unknown ones when `special`) are cut out of the text, longest token first; every other
/// piece gets a dummy-prefix space when `add_space_prefix` and that piece starts the text or follows
/// a cut-out token, and is split into UTF-8 characters that are merged pairwise, the pair whose
/// concatenation is the vocabulary entry of highest score first (leftmost on ties). A character that
/// is no token becomes its bytes' "<0xXX>" tokens (found by name), else <unk>.
struct sp_vocab {
    /// llama.cpp / SentencePiece token types.
    enum type : int { normal = 1, unknown = 2, control = 3, user_defined = 4, unused = 5, byte = 6 };
    std::vector<std::string> tokens;
    std::vector<float> scores;      ///< merge priority, one per token (higher merges first); empty = all 0
    std::vector<int> token_types;   ///< one per token; empty = all normal (llama2.c)
    int bos = 1, eos = 2, unk = 0;  ///< -1 = none
    bool add_bos = true;
    bool add_space_prefix = true;
    bool escape_whitespace = true;  ///< false for llama2.c, whose exports spell spaces ' '
};
/// Throws eval_error for an empty vocabulary, per-token arrays of the wrong length or special ids
/// outside the vocabulary.
std::unique_ptr<tokenizer> make_sp_tokenizer(const sp_vocab& vocab);

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

}  // namespace pkveval

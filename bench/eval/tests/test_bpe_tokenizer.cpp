/// Byte-level BPE: ids checked by hand on a tiny vocabulary, round trips, the SmolLM2 regex split,
/// and (when PATTERNKV_SMOLLM2_GGUF names the file) the real SmolLM2 vocabulary.

#include <cstdlib>
#include <filesystem>
#include <string>

#include <doctest/doctest.h>

#include "eval_error.hpp"
#include "model.hpp"
#include "tokenizer.hpp"

using namespace pkveval;

namespace {

/// Byte-level symbols for bytes 0..255 (ids 0..255 in GPT-2's order of bytes_to_unicode is not
/// needed here: the test assigns ids by byte value) plus a few merges.
bpe_vocab tiny_vocab(const std::string& pre) {
    bpe_vocab v;
    v.tokens.resize(256);
    int n = 0;
    for (int b = 0; b < 256; ++b) {  // GPT-2 bytes_to_unicode, written out independently
        const bool keep = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
        const unsigned cp = keep ? b : 256 + n++;
        std::string s;
        if (cp < 0x80)
            s += static_cast<char>(cp);
        else {
            s += static_cast<char>(0xC0 | (cp >> 6));
            s += static_cast<char>(0x80 | (cp & 0x3F));
        }
        v.tokens[b] = s;  // id == byte value
    }
    // merges (rank order) and the tokens they create
    v.merges = {"Ġ t", "h e", "Ġt he", "i n", "Ġ a", "Ġa n", "Ġan d", "1 2"};
    for (const char* t : {"Ġt", "he", "Ġthe", "in", "Ġa", "Ġan", "Ġand", "12"}) v.tokens.push_back(t);  // ids 256..263
    v.tokens.push_back("<|eos|>");                                                                      // 264, control
    v.token_types.assign(v.tokens.size(), 1);
    v.token_types[264] = 3;
    v.eos = 264;
    v.bos = 264;
    v.pre = pre;
    return v;
}

}  // namespace

TEST_CASE("bpe: hand-checked ids on a tiny vocabulary") {
    auto tok = make_bpe_tokenizer(tiny_vocab("gpt2"));
    // " the" -> Ġ t h e -> (Ġt)(h e) -> Ġthe
    CHECK(tok->encode(" the", false) == std::vector<int>{258});
    // "the" -> t h e -> t (he)
    CHECK(tok->encode("the", false) == std::vector<int>{'t', 257});
    // "in the and" -> "in" | " the" | " and"
    CHECK(tok->encode("in the and", false) == std::vector<int>{259, 258, 262});
    // gpt2 keeps digit runs together: " 123" -> Ġ (12) 3 ; Ġ is byte 0x20 -> id 32
    CHECK(tok->encode(" 123", false) == std::vector<int>{32, 263, '3'});
    // smollm isolates every digit first, so "12" never merges
    auto smol = make_bpe_tokenizer(tiny_vocab("smollm"));
    CHECK(smol->encode(" 123", false) == std::vector<int>{32, '1', '2', '3'});
    CHECK(smol->encode("the and", false) == std::vector<int>{'t', 257, 262});
    // control tokens: recognised only when asked
    CHECK(tok->encode("a<|eos|>", false, true) == std::vector<int>{'a', 264});
    CHECK(tok->encode("a<|eos|>", false, false).size() == 8);
    CHECK(tok->encode("x", true) == std::vector<int>{264, 'x'});
}

TEST_CASE("bpe: decode(encode(s)) == s") {
    for (const char* pre : {"gpt2", "smollm", "llama-bpe", "qwen2"}) {
        auto tok = make_bpe_tokenizer(tiny_vocab(pre));
        for (const std::string s : {"Hello, world!", "  leading and trailing  ", "tabs\tand\nnewlines\r\n\n",
                                    "digits 0123456789 and 3.14159, -42", "punctuation!?.,;:'\"()[]{}<>@#$%^&*", "it's we'll they're I'd",
                                    "Grüße, naïve café — 東京 🙂 ÀÉÎ", "     ", "\xe2\x80\xaf nbsp"}) {
            CAPTURE(pre);
            CAPTURE(s);
            CHECK(tok->decode_all(tok->encode(s, false)) == s);
        }
    }
}

TEST_CASE("bpe: unknown pre-tokenizer and invalid UTF-8 are clean errors") {
    CHECK_THROWS_AS(make_bpe_tokenizer(tiny_vocab("no-such-pre")), eval_error);
    auto tok = make_bpe_tokenizer(tiny_vocab("smollm"));
    CHECK_THROWS_AS(tok->encode("bad \xff\xfe utf8", false), eval_error);
}

TEST_CASE("bpe: the SmolLM2 vocabulary (PATTERNKV_SMOLLM2_GGUF)") {
    const char* path = std::getenv("PATTERNKV_SMOLLM2_GGUF");
    if (path == nullptr || *path == '\0') {
        MESSAGE("PATTERNKV_SMOLLM2_GGUF unset: SmolLM2 vocabulary checks not run");
        return;
    }
    REQUIRE_MESSAGE(std::filesystem::exists(path), "PATTERNKV_SMOLLM2_GGUF names a missing file: ", path);
    auto tok = load_gguf_tokenizer(path);
    CHECK(tok->vocab_size() == 49152);
    CHECK(tok->bos_id() == 1);
    CHECK(tok->eos_id() == 2);
    CHECK(tok->encode("<|im_start|>user", false, true).front() == 1);
    // digits are isolated: one token per digit
    CHECK(tok->encode("2024", false).size() == 4);
    CHECK(tok->encode(" the", false).size() == 1);
    for (const std::string s : {"The quick brown fox jumps over the lazy dog.", "GNU GENERAL PUBLIC LICENSE\n   Version 3, 29 June 2007",
                                "Grüße 東京 🙂", "  x  \n\n\t y"}) {
        CAPTURE(s);
        CHECK(tok->decode_all(tok->encode(s, false)) == s);
    }
}

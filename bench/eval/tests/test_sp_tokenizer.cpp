/// SentencePiece-style BPE (sp_tokenizer.cpp): merge order, byte fallback, dummy prefix, special
/// tokens and round trips on a tiny hand-made vocabulary, and (when PATTERNKV_GEMMA3_GGUF names the
/// file) the real Gemma 3 vocabulary against ids from reference tokenizers.

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include <doctest/doctest.h>

#include "eval_error.hpp"
#include "gguf_tokenizer.hpp"
#include "tokenizer.hpp"

using namespace pkveval;

namespace {

/// A tiny vocabulary in Gemma's layout: special tokens first, normal pieces, and the 256 byte
/// tokens last (so a byte's token is NOT byte + 3). `space` spells ' ' in the pieces: U+2581 as in
/// GGUF files, or ' ' as in llama2.c's exports.
struct tiny {
    sp_vocab v;
    std::string sp;

    explicit tiny(bool prefix, bool bytes = true, const std::string& space = "\xe2\x96\x81") : sp(space) {
        v.add_space_prefix = prefix;
        v.escape_whitespace = space != " ";
        v.unk = add("<unk>", 0, sp_vocab::unknown);  // 0
        v.bos = add("<s>", 0, sp_vocab::control);    // 1
        v.eos = add("</s>", 0, sp_vocab::control);   // 2
        add("<ctl>", 0, sp_vocab::control);
        add("<b>", 0, sp_vocab::user_defined);
        add("\n", 0, sp_vocab::user_defined);
        add("\n\n", 0, sp_vocab::user_defined);
        // a run of spaces, spelled with real spaces as Gemma's GGUF does (not with llama2.c's spelling,
        // where merging the escaped text could form it)
        if (space != " ") add("  ", 0, sp_vocab::user_defined);
        add(sp, -100);
        for (char c = 'a'; c <= 'z'; ++c) add(std::string(1, c), -100);
        for (char c = '0'; c <= '9'; ++c) add(std::string(1, c), -100);
        for (const char* c : {"<", ">", "/", ",", ".", "!", "\t", "\r"}) add(c, -100);
        add("ab", -5);
        add("bc", -1);
        add("aa", -2);
        add(sp + "a", -3);
        add("he", -10);
        add("ll", -11);
        add("hell", -12);
        add("hello", -13);
        add(sp + "hello", -14);
        add(sp + "b", -20);
        if (bytes)
            for (int b = 0; b < 256; ++b) add(fmt_byte(b), 0, sp_vocab::byte);
    }
    static std::string fmt_byte(int b) {
        static const char* hex = "0123456789ABCDEF";
        return std::string("<0x") + hex[b >> 4] + hex[b & 15] + ">";
    }
    int add(const std::string& t, float score, int type = sp_vocab::normal) {
        v.tokens.push_back(t);
        v.scores.push_back(score);
        v.token_types.push_back(type);
        return static_cast<int>(v.tokens.size()) - 1;
    }
    /// Id of the token spelled `t` ("_" stands for the space spelling).
    int id(std::string t) const {
        for (std::size_t p; (p = t.find('_')) != std::string::npos;) t.replace(p, 1, sp);
        for (std::size_t i = 0; i < v.tokens.size(); ++i)
            if (v.tokens[i] == t) return static_cast<int>(i);
        FAIL("no token '", t, "' in the tiny vocabulary");
        return -1;
    }
    std::vector<int> ids(std::initializer_list<const char*> ts) const {
        std::vector<int> out;
        for (const char* t : ts) out.push_back(id(t));
        return out;
    }
    int byte(int b) const { return id(fmt_byte(b)); }
};

const std::vector<std::string> tricky = {"Hello, world!",
                                         "hello",
                                         "  leading spaces",
                                         "trailing spaces  ",
                                         "a   b    c     d",
                                         "\n\nnew\nlines\n\n\n",
                                         "digits 0123456789 and 3.14159",
                                         "Grüße, naïve café — 東京 🙂 👩‍👩‍👧",
                                         " ",
                                         "  ",
                                         "",
                                         "x<b>y</b>z",
                                         "tabs\tand\r\nCRLF",
                                         "\n hello",
                                         "<b> <b>",
                                         "aaa abc ab bc",
                                         "<ctl> and <s> as plain text"};

}  // namespace

TEST_CASE("sp: merges by the highest score of the merged piece, leftmost on ties") {
    tiny t(false);
    auto tok = make_sp_tokenizer(t.v);
    // "bc" (-1) beats "ab" (-5); "abc" is no token, so a + bc stays
    CHECK(tok->encode("abc", false) == t.ids({"a", "bc"}));
    // swap the scores: now "ab" first
    t.v.scores[t.id("ab")] = -1;
    t.v.scores[t.id("bc")] = -5;
    CHECK(make_sp_tokenizer(t.v)->encode("abc", false) == t.ids({"ab", "c"}));
    // three a's, one "aa": both pairs tie, the left one merges
    CHECK(tok->encode("aaa", false) == t.ids({"aa", "a"}));
    CHECK(tok->encode("aaaaa", false) == t.ids({"aa", "aa", "a"}));
    // chains of merges: h e l l o -> he ll o -> hell o -> hello
    CHECK(tok->encode("hello", false) == t.ids({"hello"}));
    CHECK(tok->encode("hello hello", false) == t.ids({"hello", "_hello"}));
    CHECK(tok->encode("x", true) == std::vector<int>{t.v.bos, t.id("x")});
}

TEST_CASE("sp: dummy-prefix space only when add_space_prefix") {
    tiny on(true), off(false);
    auto with = make_sp_tokenizer(on.v), without = make_sp_tokenizer(off.v);
    CHECK(with->encode("a", false) == on.ids({"_a"}));
    CHECK(without->encode("a", false) == off.ids({"a"}));
    CHECK(with->encode("hello", false) == on.ids({"_hello"}));
    CHECK(without->encode("hello", false) == off.ids({"hello"}));
    CHECK(with->encode("", false).empty());
    CHECK(with->encode("", true) == std::vector<int>{on.v.bos});
    // llama2.c's spelling: a real space in the vocabulary, no escaping
    tiny raw(true, true, " ");
    auto r = make_sp_tokenizer(raw.v);
    CHECK(r->encode("a b", false) == raw.ids({"_a", "_b"}));
    CHECK(r->decode_all(r->encode("a b", true)) == "a b");
}

TEST_CASE("sp: byte fallback for characters outside the vocabulary, by the tokens' names") {
    tiny t(false);
    auto tok = make_sp_tokenizer(t.v);
    CHECK(t.byte(0xC3) != 0xC3 + 3);                                                        // the ids are not byte + 3
    CHECK(tok->encode("\xc3\xa9", false) == std::vector<int>{t.byte(0xC3), t.byte(0xA9)});  // é
    CHECK(tok->encode("a\xf0\x9f\x99\x82"
                      "b",
                      false) == std::vector<int>{t.id("a"), t.byte(0xF0), t.byte(0x9F), t.byte(0x99), t.byte(0x82), t.id("b")});  // 🙂
    CHECK(tok->encode("A", false) == std::vector<int>{t.byte('A')});
    CHECK(tok->decode(t.byte(0xC3), -1) == "\xc3");
    CHECK(tok->decode_all(tok->encode("\xc3\xa9", false)) == "\xc3\xa9");
}

TEST_CASE("sp: without byte tokens an unknown character is <unk>, and without <unk> an error") {
    tiny t(false, false);
    auto tok = make_sp_tokenizer(t.v);
    CHECK(tok->encode("a\xc3\xa9"
                      "b",
                      false) == std::vector<int>{t.id("a"), t.v.unk, t.id("b")});
    CHECK(tok->decode(t.v.unk, -1).empty());
    t.v.unk = -1;
    auto strict = make_sp_tokenizer(t.v);
    CHECK_THROWS_AS(strict->encode("\xc3\xa9", false), eval_error);
    CHECK(strict->encode("ab", false) == t.ids({"ab"}));
}

TEST_CASE("sp: user-defined tokens are cut out of the text before merging") {
    tiny t(false);
    auto tok = make_sp_tokenizer(t.v);
    CHECK(tok->encode("a<b>b", false) == t.ids({"a", "<b>", "b"}));
    CHECK(tok->encode("a<b>b", false, true) == t.ids({"a", "<b>", "b"}));
    // longest token first: "\n\n\n" is "\n\n" + "\n"
    CHECK(tok->encode("\n\n\n", false) == t.ids({"\n\n", "\n"}));
    // a run of spaces is its user-defined token, not "▁" "▁a"
    CHECK(tok->encode("x  a", false) == t.ids({"x", "  ", "a"}));
    CHECK(tok->encode("x   a", false) == t.ids({"x", "  ", "_a"}));
    // with the dummy prefix, each piece after a cut-out token gets one (as llama.cpp)
    tiny p(true);
    auto pre = make_sp_tokenizer(p.v);
    CHECK(pre->encode("a<b>b", false) == p.ids({"_a", "<b>", "_b"}));
    CHECK(pre->decode_all(pre->encode("a<b>b", false)) == "a<b>b");
}

TEST_CASE("sp: control tokens in the text only with special = true") {
    tiny t(false);
    auto tok = make_sp_tokenizer(t.v);
    CHECK(tok->encode("<ctl>x", false, true) == t.ids({"<ctl>", "x"}));
    CHECK(tok->encode("<ctl>x", false, false) == t.ids({"<", "c", "t", "l", ">", "x"}));
    CHECK(tok->encode("<s>a</s>", false, true) == t.ids({"<s>", "a", "</s>"}));
    CHECK(tok->encode("<unk>", false, true) == t.ids({"<unk>"}));
    // control tokens decode to nothing, user-defined ones to their text
    CHECK(tok->decode(t.id("<ctl>"), -1).empty());
    CHECK(tok->decode(t.v.bos, -1).empty());
    CHECK(tok->decode(t.id("<b>"), -1) == "<b>");
    CHECK(tok->decode(t.id("  "), -1) == "  ");
}

TEST_CASE("sp: decode(encode(s)) == s") {
    for (const std::string space : {"\xe2\x96\x81", " "}) {
        for (bool prefix : {false, true}) {
            tiny t(prefix, true, space);
            auto tok = make_sp_tokenizer(t.v);
            CHECK(tok->decode(t.id("_"), t.id("x")) == " ");
            for (const std::string& s : tricky) {
                CAPTURE(prefix);
                CAPTURE(space);
                CAPTURE(s);
                CHECK(tok->decode_all(tok->encode(s, false)) == s);
                const std::vector<int> with_bos = tok->encode(s, true);
                CHECK(tok->decode_all(with_bos) == s);
            }
        }
    }
}

TEST_CASE("sp: malformed vocabularies are clean errors") {
    tiny t(false);
    sp_vocab v = t.v;
    v.scores.pop_back();
    CHECK_THROWS_AS(make_sp_tokenizer(v), eval_error);
    v = t.v;
    v.bos = static_cast<int>(v.tokens.size());
    CHECK_THROWS_AS(make_sp_tokenizer(v), eval_error);
    v = t.v;
    v.token_types[t.id("a")] = sp_vocab::byte;  // a byte token not spelled <0xXX>
    CHECK_THROWS_AS(make_sp_tokenizer(v), eval_error);
    CHECK_THROWS_AS(make_sp_tokenizer(sp_vocab{}), eval_error);
}

namespace {

/// FNV-1a over the ids as 32-bit little-endian words (tools/check-gguf-tokenizer.py prints the same).
std::uint64_t fnv1a(const std::vector<int>& ids) {
    std::uint64_t h = 14695981039346656037ull;
    for (int id : ids)
        for (int k = 0; k < 4; ++k) {
            h ^= static_cast<std::uint32_t>(id) >> (8 * k) & 0xFF;
            h *= 1099511628211ull;
        }
    return h;
}

}  // namespace

TEST_CASE("sp: the Gemma 3 vocabulary (PATTERNKV_GEMMA3_GGUF)") {
    const char* path = std::getenv("PATTERNKV_GEMMA3_GGUF");
    if (path == nullptr || *path == '\0') {
        MESSAGE("*** PATTERNKV_GEMMA3_GGUF unset: the Gemma 3 tokenizer checks DID NOT RUN ***");
        return;
    }
    REQUIRE_MESSAGE(std::filesystem::exists(path), "PATTERNKV_GEMMA3_GGUF names a missing file: ", std::string(path));
    using clock = std::chrono::steady_clock;
    auto ms = [](clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); };
    const gguf_file g = gguf_file::load(path);
    const auto t0 = clock::now();
    auto tok = make_gguf_tokenizer(g);
    const double build_ms = ms(clock::now() - t0);
    MESSAGE("Gemma 3 tokenizer (262,144 tokens) built in ", build_ms, " ms");
    CHECK(build_ms < 2000.0);
    CHECK(tok->vocab_size() == 262144);
    CHECK(tok->bos_id() == 2);
    CHECK(tok->eos_id() == 1);
    CHECK(tok->adds_bos());

    // Ids from the reference tokenizers (tools/check-gguf-tokenizer.py builds both): plain text
    // (special = false) from sentencepiece 0.2.3 on a ModelProto rebuilt from this file's
    // vocabulary, scores and token types; control tokens in the text (special = true) from
    // transformers 5.24's tokenizer for this GGUF. transformers gives the same plain-text ids except
    // for the run of 33 spaces (it cuts it 16 + 17: it cannot tell that the space runs are
    // user-defined tokens) and control tokens, which it always parses.
    struct ref {
        std::string text;
        bool special;
        std::vector<int> ids;
    };
    const std::vector<ref> refs = {
        {"Hello world", false, {9259, 1902}},                                                          // Hello ▁world
        {"  leading", false, {138, 26016}},                                                            // "  " leading
        {"a  b   c\n\n\nd", false, {236746, 138, 236763, 139, 236755, 109, 236753}},                   // user-defined runs
        {"<b>bold</b>", false, {200, 15640, 209}},                                                     // user-defined tags
        {"emoji \xf0\x9f\x99\x82 ok", false, {67906, 57235, 7546}},                                    // emoji ▁🙂 ▁ok
        {"\xe2\x84\x8c = \xf0\x9d\x94\xa2", false, {464, 370, 378, 578, 236743, 478, 395, 386, 400}},  // ℌ, 𝔢: byte fallback
        {std::string("\0x", 2), false, {238, 236781}},                                                 // <0x00> x
        {std::string(33, ' ') + "x", false, {167, 138, 236781}},                                       // 31 + 2 spaces, x
        {"\xe2\x96\x81"
         "already"
         "\xe2\x96\x81"
         "escaped \xe2\x96\x81",
         false,
         {3016, 41685, 138}},  // " ▁" is a run of 2
        {"\tdef f():\n\t\treturn 42\n", false, {255968, 2063, 517, 6141, 107, 255969, 2060, 236743, 236812, 236778, 107}},
        {"na\xc3\xafve caf\xc3\xa9 \xe6\x9d\xb1\xe4\xba\xac", false, {1789, 238527, 560, 33443, 86459}},  // naïve café 東京
        {"<start_of_turn>user", false, {236820, 3041, 236779, 1340, 236779, 887, 236813, 2364}},
        {"<start_of_turn>user", true, {105, 2364}},
        {"<start_of_turn>user\nHi<end_of_turn>\n", true, {105, 2364, 107, 10979, 106, 107}},
    };
    for (const ref& r : refs) {
        CAPTURE(r.text);
        CAPTURE(r.special);
        CHECK(tok->encode(r.text, false, r.special) == r.ids);
    }

    for (const std::string& s : tricky) {
        CAPTURE(s);
        CHECK(tok->decode_all(tok->encode(s, false)) == s);
        CHECK(tok->decode_all(tok->encode(s, true)) == s);
    }

    const std::string gpl_path = "/usr/share/common-licenses/GPL-3";
    REQUIRE_MESSAGE(std::filesystem::exists(gpl_path), "missing ", gpl_path);
    std::ifstream f(gpl_path, std::ios::binary);
    const std::string gpl(std::istreambuf_iterator<char>(f), {});
    const auto t1 = clock::now();
    const std::vector<int> ids = tok->encode(gpl, true);
    const double encode_ms = ms(clock::now() - t1);
    MESSAGE("GPL-3 (", gpl.size(), " bytes): ", ids.size(), " tokens with BOS, encoded in ", encode_ms, " ms");
    CHECK(tok->decode_all(ids) == gpl);
    // sentencepiece: 7,562 tokens without BOS, FNV-1a of BOS + ids (tools/check-gguf-tokenizer.py)
    CHECK(ids.size() == 7563);
    CHECK(fnv1a(ids) == 0xbc089cc45e04744aull);
}

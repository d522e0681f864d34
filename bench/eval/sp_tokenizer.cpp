/// @file sp_tokenizer.cpp
/// SentencePiece-style BPE, one implementation for llama2.c's tokenizer.bin and for GGUF files with
/// tokenizer.ggml.model = "llama" (Gemma, Llama 2, ...). It follows llama.cpp's SPM tokenizer
/// (llama-vocab.cpp: tokenizer_st_partition, llm_tokenizer_spm_session, token_to_piece):
/// 1. ' ' is spelled U+2581 "▁" (escape_whitespace);
/// 2. special tokens are cut out of the text: user-defined ones always, control and unknown ones
///    only when `special`; one token at a time, longest first, at each non-overlapping occurrence
///    (leftmost first) in the pieces the longer ones left. llama.cpp does this before step 1,
///    against the tokens as its converter writes them, with user-defined "▁" turned into ' '
///    (Gemma's runs of spaces); here the tokens' spaces are spelled "▁" again and matched after
///    step 1, which gives the same pieces except that a "▁" written in the text next to spaces
///    joins a run, as in sentencepiece and transformers;
/// 3. every other piece gets the dummy-prefix space when add_space_prefix and it starts the text or
///    follows a cut-out token, and is split into UTF-8 characters;
/// 4. adjacent symbols merge while some concatenation is a vocabulary entry, the one of highest
///    score first, leftmost on ties (run.c's encode() and llama.cpp use the same order). run.c
///    rescans all pairs after each merge (quadratic); a heap with lazy invalidation gives the same
///    order in n log n, which matters for the 800 kB TinyStories text;
/// 5. a symbol left over that is no token (a character outside the vocabulary) becomes the
///    "<0xXX>" tokens of its bytes, found by name; without those, <unk>.
/// Decoding spells U+2581 as ' ', byte tokens as their byte, control/unknown/unused tokens as
/// nothing, user-defined ones as written, and drops the dummy-prefix space of a piece's first token.

#include <algorithm>
#include <array>
#include <cstdint>
#include <fstream>
#include <queue>
#include <string_view>
#include <unordered_map>
#include <unordered_set>

#include <fmt/format.h>

#include "eval_error.hpp"
#include "tokenizer.hpp"

namespace pkveval {

std::string tokenizer::decode_all(const std::vector<int>& ids) const {
    std::string s;
    int prev = -1;
    for (int id : ids) {
        s += decode(id, prev);
        prev = id;
    }
    return s;
}

namespace {

constexpr std::string_view space_mark = "\xe2\x96\x81";  // U+2581, SentencePiece's spelling of ' '

/// Byte length of the UTF-8 sequence led by `c`, from its high nibble as llama.cpp's
/// unicode_len_utf8 (a stray continuation byte counts 1).
std::size_t utf8_len(unsigned char c) {
    static constexpr std::array<std::size_t, 16> len{1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
    return len[c >> 4];
}

/// The byte a "<0xXX>" token stands for, or -1 when `t` is not spelled so.
int byte_of_name(std::string_view t) {
    auto hex = [](char c) {
        return c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
    };
    if (t.size() != 6 || t.substr(0, 3) != "<0x" || t[5] != '>' || hex(t[3]) < 0 || hex(t[4]) < 0) return -1;
    return hex(t[3]) * 16 + hex(t[4]);
}

class sp_tokenizer final : public tokenizer {
public:
    explicit sp_tokenizer(const sp_vocab& vocab) : v_(vocab) {
        const int n = static_cast<int>(v_.tokens.size());
        if (n == 0) throw eval_error("SentencePiece vocabulary has no tokens");
        if (!v_.scores.empty() && static_cast<int>(v_.scores.size()) != n)
            throw eval_error(fmt::format("SentencePiece vocabulary has {} scores for {} tokens", v_.scores.size(), n));
        if (!v_.token_types.empty() && static_cast<int>(v_.token_types.size()) != n)
            throw eval_error(fmt::format("SentencePiece vocabulary has {} token types for {} tokens", v_.token_types.size(), n));
        for (int id : {v_.bos, v_.eos, v_.unk})
            if (id < -1 || id >= n) throw eval_error(fmt::format("special token id {} is outside the {}-token vocabulary", id, n));

        ids_.reserve(static_cast<std::size_t>(n));
        for (int i = 0; i < n; ++i)
            if (!v_.tokens[i].empty()) ids_.emplace(std::string_view(v_.tokens[i]), i);  // the first of duplicates wins
        for (int b = 0; b < 256; ++b) {  // llama.cpp's byte_to_token: "<0xXX>", else the byte itself
            int id = find(fmt::format("<0x{:02X}>", b));
            if (id < 0) id = find(std::string(1, static_cast<char>(b)));
            byte_id_[b] = id;
        }
        byte_value_.assign(static_cast<std::size_t>(n), -1);
        for (int i = 0; i < n; ++i) {
            const int t = type_of(i), b = byte_of_name(v_.tokens[i]);
            if (t == sp_vocab::byte && b < 0) throw eval_error(fmt::format("byte token {} is spelled '{}', not <0xXX>", i, v_.tokens[i]));
            if (t == sp_vocab::byte || (v_.token_types.empty() && b >= 0)) byte_value_[i] = b;  // no types: by name (llama2.c)
            if ((t == sp_vocab::user_defined || t == sp_vocab::control || t == sp_vocab::unknown) && !v_.tokens[i].empty()) {
                const std::string s = escape(v_.tokens[i]);
                if (trie_insert(s, i)) special_text_.emplace(i, s);
            }
        }
    }
    sp_tokenizer(const sp_tokenizer&) = delete;  // ids_ holds views into v_.tokens
    sp_tokenizer& operator=(const sp_tokenizer&) = delete;

    std::vector<int> encode(std::string_view text, bool bos, bool special) const override {
        std::vector<int> ids;
        if (bos) {
            if (v_.bos < 0) throw eval_error("this tokenizer has no BOS token");
            ids.push_back(v_.bos);
        }
        const std::string s = escape(text);
        bool after_special = true;  // the start of the text counts as following a special token
        std::string buf;
        for (const piece& p : partition(s, special)) {
            if (p.token >= 0) {
                ids.push_back(p.token);
                after_special = true;
                continue;
            }
            if (v_.add_space_prefix && after_special) {
                buf.assign(v_.escape_whitespace ? space_mark : " ");
                buf += std::string_view(s).substr(p.off, p.len);
                encode_piece(buf, ids);
            } else {
                encode_piece(std::string_view(s).substr(p.off, p.len), ids);
            }
            after_special = false;
        }
        return ids;
    }

    std::string decode(int id, int prev) const override {
        if (id < 0 || id >= vocab_size()) throw eval_error(fmt::format("token id {} out of range", id));
        if (byte_value_[id] >= 0) return std::string(1, static_cast<char>(byte_value_[id]));
        const int t = type_of(id);
        const std::string& piece = v_.tokens[id];
        if (t == sp_vocab::user_defined) return piece;
        if (t != sp_vocab::normal) return {};  // control, unknown, unused, undefined: not text
        std::string out;
        if (v_.escape_whitespace) {
            for (std::size_t i = 0; i < piece.size();) {
                if (piece.compare(i, space_mark.size(), space_mark) == 0) {
                    out += ' ';
                    i += space_mark.size();
                } else {
                    out += piece[i++];
                }
            }
        } else {
            out = piece;
        }
        if (v_.add_space_prefix && starts_piece(prev) && !out.empty() && out[0] == ' ') out.erase(0, 1);
        return out;
    }
    int bos_id() const override { return v_.bos; }
    int eos_id() const override { return v_.eos; }
    int vocab_size() const override { return static_cast<int>(v_.tokens.size()); }
    bool adds_bos() const override { return v_.add_bos; }

private:
    /// A piece of the text: a cut-out special token (token >= 0) or text [off, off + len) to merge.
    struct piece {
        int token;
        std::size_t off, len;
    };

    /// Step 1 (nothing to do without escape_whitespace).
    std::string escape(std::string_view text) const {
        if (!v_.escape_whitespace) return std::string(text);
        std::string out;
        out.reserve(text.size() + text.size() / 4);
        for (char c : text) {
            if (c == ' ')
                out += space_mark;
            else
                out += c;
        }
        return out;
    }
    int type_of(int id) const { return v_.token_types.empty() ? sp_vocab::normal : v_.token_types[id]; }
    float score_of(int id) const { return v_.scores.empty() ? 0.0f : v_.scores[id]; }
    int find(std::string_view s) const {
        auto it = ids_.find(s);
        return it != ids_.end() ? it->second : -1;
    }
    /// Whether a token after `prev` begins a piece of text (so carries the dummy prefix).
    bool starts_piece(int prev) const {
        if (prev < 0 || prev == v_.bos) return true;
        if (prev >= vocab_size()) return false;
        const int t = type_of(prev);
        return t == sp_vocab::control || t == sp_vocab::user_defined || t == sp_vocab::unknown;
    }

    static std::uint64_t edge(int node, char c) { return static_cast<std::uint64_t>(node) << 8 | static_cast<unsigned char>(c); }
    /// False when another special token is spelled the same (the first one wins).
    bool trie_insert(std::string_view s, int id) {
        int node = 0;
        for (char c : s) {
            auto [it, added] = trie_edges_.emplace(edge(node, c), static_cast<int>(trie_token_.size()));
            if (added) trie_token_.push_back(-1);
            node = it->second;
        }
        if (trie_token_[node] >= 0) return false;
        trie_token_[node] = id;
        return true;
    }

    /// Step 2, llama.cpp's tokenizer_st_partition, on escaped text. Only the special tokens that
    /// occur in the text (found with the trie) are tried, which gives the same pieces: a token
    /// absent from the text is absent from every piece of it. Longest first by the length llama.cpp
    /// sorts by, the token as written in the vocabulary.
    std::vector<piece> partition(std::string_view text, bool special) const {
        std::vector<piece> out;
        if (text.empty()) return out;
        out.push_back({-1, 0, text.size()});
        if (trie_edges_.empty()) return out;
        std::unordered_set<int> seen;
        for (std::size_t i = 0; i < text.size(); ++i) {
            int node = 0;
            for (std::size_t j = i; j < text.size(); ++j) {
                auto it = trie_edges_.find(edge(node, text[j]));
                if (it == trie_edges_.end()) break;
                node = it->second;
                const int t = trie_token_[node];
                if (t >= 0 && (special || type_of(t) == sp_vocab::user_defined)) seen.insert(t);
            }
        }
        std::vector<int> found(seen.begin(), seen.end());
        std::sort(found.begin(), found.end(), [&](int a, int b) {
            const std::size_t la = v_.tokens[a].size(), lb = v_.tokens[b].size();
            return la != lb ? la > lb : a < b;
        });
        for (int t : found) {
            const std::string_view s = special_text_.at(t);
            std::vector<piece> next;
            for (const piece& p : out) {
                if (p.token >= 0) {
                    next.push_back(p);
                    continue;
                }
                const std::size_t end = p.off + p.len;
                std::size_t start = p.off;
                for (std::size_t hit; (hit = text.substr(0, end).find(s, start)) != std::string_view::npos; start = hit + s.size()) {
                    if (hit > start) next.push_back({-1, start, hit - start});
                    next.push_back({t, hit, s.size()});
                }
                if (start < end) next.push_back({-1, start, end - start});
            }
            out = std::move(next);
        }
        return out;
    }

    /// Steps 4 and 5 on one escaped piece of text.
    void encode_piece(std::string_view s, std::vector<int>& ids) const {
        struct symbol {
            int prev, next;
            std::size_t off, len;  // len 0: merged into its left neighbour
            int id;                // token spelled s[off, off + len), or -1
        };
        std::vector<symbol> sym;
        for (std::size_t off = 0; off < s.size();) {
            const std::size_t len = std::min(utf8_len(static_cast<unsigned char>(s[off])), s.size() - off);
            const int i = static_cast<int>(sym.size());
            sym.push_back({i - 1, off + len < s.size() ? i + 1 : -1, off, len, find(s.substr(off, len))});
            off += len;
        }
        struct bigram {
            float score;
            int left, right;
            std::size_t len;  // of the merged text: a pair whose sides changed since is stale
            int id;
            bool operator<(const bigram& o) const {  // max-heap: higher score, then smaller index
                return score != o.score ? score < o.score : left > o.left;
            }
        };
        std::priority_queue<bigram> heap;
        auto try_pair = [&](int l, int r) {
            if (l < 0 || r < 0) return;
            const std::size_t len = sym[l].len + sym[r].len;
            const int id = find(s.substr(sym[l].off, len));
            if (id >= 0) heap.push({score_of(id), l, r, len, id});
        };
        for (int i = 1; i < static_cast<int>(sym.size()); ++i) try_pair(i - 1, i);
        while (!heap.empty()) {
            const bigram b = heap.top();
            heap.pop();
            symbol& l = sym[b.left];
            symbol& r = sym[b.right];
            if (l.len == 0 || r.len == 0 || l.len + r.len != b.len) continue;  // stale
            l.len = b.len;
            l.id = b.id;
            r.len = 0;
            l.next = r.next;
            if (r.next >= 0) sym[r.next].prev = b.left;
            try_pair(l.prev, b.left);
            try_pair(b.left, l.next);
        }
        for (int i = sym.empty() ? -1 : 0; i >= 0; i = sym[i].next) {
            if (sym[i].id >= 0)
                ids.push_back(sym[i].id);
            else
                push_bytes(s.substr(sym[i].off, sym[i].len), ids);
        }
    }

    /// A character outside the vocabulary: its byte tokens, else <unk>.
    void push_bytes(std::string_view ch, std::vector<int>& ids) const {
        if (std::all_of(ch.begin(), ch.end(), [&](char c) { return byte_id_[static_cast<unsigned char>(c)] >= 0; })) {
            for (char c : ch) ids.push_back(byte_id_[static_cast<unsigned char>(c)]);
            return;
        }
        if (v_.unk < 0) {
            std::string hex;
            for (char c : ch) hex += fmt::format("{:02X}", static_cast<unsigned char>(c));
            throw eval_error(fmt::format("character 0x{} is not in the vocabulary, which has neither byte tokens for it nor <unk>", hex));
        }
        ids.push_back(v_.unk);
    }

    sp_vocab v_;
    std::unordered_map<std::string_view, int> ids_;      // views into v_.tokens
    std::array<int, 256> byte_id_{};                     // token of each byte, or -1
    std::vector<int> byte_value_;                        // byte of each byte token, or -1
    std::unordered_map<int, std::string> special_text_;  // special token -> its escaped spelling
    std::unordered_map<std::uint64_t, int> trie_edges_;  // escaped special tokens: edge(node, char) -> node
    std::vector<int> trie_token_{-1};                    // node -> special token spelled up to it, or -1
};

}  // namespace

std::unique_ptr<tokenizer> make_sp_tokenizer(const sp_vocab& vocab) { return std::make_unique<sp_tokenizer>(vocab); }

std::unique_ptr<tokenizer> load_llama2c_tokenizer(const std::string& path, int vocab_size) {
    std::ifstream f(path, std::ios::binary);
    if (!f) throw eval_error(fmt::format("cannot open tokenizer file '{}'", path));
    std::int32_t max_len = 0;
    if (!f.read(reinterpret_cast<char*>(&max_len), 4) || max_len <= 0 || max_len > 4096)
        throw eval_error(fmt::format("'{}' is not a llama2.c tokenizer (bad max_token_length)", path));
    sp_vocab v;  // run.c: BOS 1, EOS 2, dummy prefix, spaces spelled ' ', no token types
    v.bos = 1;
    v.eos = 2;
    v.unk = 0;
    v.add_bos = true;
    v.add_space_prefix = true;
    v.escape_whitespace = false;
    for (int i = 0; i < vocab_size; ++i) {
        float score = 0;
        std::int32_t len = 0;
        if (!f.read(reinterpret_cast<char*>(&score), 4) || !f.read(reinterpret_cast<char*>(&len), 4) || len < 0 || len > max_len)
            throw eval_error(fmt::format("tokenizer '{}' is truncated or corrupt at token {} of {}", path, i, vocab_size));
        std::string s(static_cast<std::size_t>(len), '\0');
        if (!f.read(s.data(), len)) throw eval_error(fmt::format("tokenizer '{}' is truncated at token {}", path, i));
        v.tokens.push_back(std::move(s));
        v.scores.push_back(score);
    }
    if (f.peek() != std::char_traits<char>::eof())
        throw eval_error(fmt::format("tokenizer '{}' holds more than the model's {} tokens", path, vocab_size));
    return make_sp_tokenizer(v);
}

}  // namespace pkveval

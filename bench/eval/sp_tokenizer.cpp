/// @file sp_tokenizer.cpp
/// llama2.c's SentencePiece-like tokenizer: dummy-prefix space, code points looked up whole, byte
/// fallback <0xXX> (id = byte + 3), then repeated merging of the adjacent pair whose concatenation
/// is the vocabulary entry of highest score (leftmost on ties), exactly as run.c's encode().
/// run.c rescans all pairs after each merge (quadratic); a heap with lazy invalidation gives the same
/// merge order in n log n, which matters for the 800 kB TinyStories text.

#include <cstdint>
#include <cstring>
#include <fstream>
#include <queue>
#include <unordered_map>

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

class sp_tokenizer final : public tokenizer {
public:
    sp_tokenizer(std::vector<std::string> vocab, std::vector<float> scores)
        : vocab_(std::move(vocab)), scores_(std::move(scores)) {
        for (int i = 0; i < static_cast<int>(vocab_.size()); ++i) lookup_.emplace(vocab_[i], i);
    }

    std::vector<int> encode(std::string_view text, bool bos, bool /*special*/) const override {
        std::vector<int> ids;
        if (bos) ids.push_back(1);
        std::vector<int> sym;
        if (!text.empty()) sym.push_back(find_or_byte(" "));
        for (std::size_t i = 0; i < text.size();) {
            std::size_t len = 1;  // one UTF-8 code point, at most 4 bytes
            while (i + len < text.size() && len < 4 && (static_cast<unsigned char>(text[i + len]) & 0xC0) == 0x80) ++len;
            const std::string cp(text.substr(i, len));
            auto it = lookup_.find(cp);
            if (it != lookup_.end()) {
                sym.push_back(it->second);
            } else {
                for (unsigned char c : cp) sym.push_back(static_cast<int>(c) + 3);
            }
            i += len;
        }
        merge(sym);
        ids.insert(ids.end(), sym.begin(), sym.end());
        return ids;
    }

    std::string decode(int id, int prev) const override {
        if (id < 0 || id >= vocab_size()) throw eval_error(fmt::format("token id {} out of range", id));
        std::string_view piece = vocab_[id];
        if (prev == 1 && !piece.empty() && piece[0] == ' ') piece.remove_prefix(1);
        unsigned byte = 0;
        if (piece.size() == 6 && piece.substr(0, 3) == "<0x" && piece[5] == '>' &&
            std::sscanf(std::string(piece.substr(3, 2)).c_str(), "%2x", &byte) == 1)
            return std::string(1, static_cast<char>(byte));
        return std::string(piece);
    }
    int bos_id() const override { return 1; }
    int eos_id() const override { return 2; }
    int vocab_size() const override { return static_cast<int>(vocab_.size()); }

private:
    int find_or_byte(const std::string& s) const {
        auto it = lookup_.find(s);
        return it != lookup_.end() ? it->second : static_cast<unsigned char>(s[0]) + 3;
    }

    struct candidate {
        float score;
        int left;      // index into the symbol list
        int merged;    // id of the merged token
        int left_id, right_id;
        bool operator<(const candidate& o) const {  // max-heap: higher score, then smaller index
            if (score != o.score) return score < o.score;
            return left > o.left;
        }
    };

    void merge(std::vector<int>& sym) const {
        const int n = static_cast<int>(sym.size());
        std::vector<int> next(n), prev(n);
        std::vector<char> alive(n, 1);
        for (int i = 0; i < n; ++i) { next[i] = i + 1 < n ? i + 1 : -1; prev[i] = i - 1; }
        std::priority_queue<candidate> heap;
        auto push = [&](int l) {
            if (l < 0 || next[l] < 0) return;
            auto it = lookup_.find(vocab_[sym[l]] + vocab_[sym[next[l]]]);
            if (it != lookup_.end()) heap.push({scores_[it->second], l, it->second, sym[l], sym[next[l]]});
        };
        for (int i = 0; i + 1 < n; ++i) push(i);
        while (!heap.empty()) {
            const candidate c = heap.top();
            heap.pop();
            const int r = next[c.left];
            if (!alive[c.left] || r < 0 || sym[c.left] != c.left_id || sym[r] != c.right_id) continue;  // stale
            sym[c.left] = c.merged;
            alive[r] = 0;
            next[c.left] = next[r];
            if (next[r] >= 0) prev[next[r]] = c.left;
            push(prev[c.left]);
            push(c.left);
        }
        std::vector<int> out;
        for (int i = 0; i >= 0 && n > 0; i = next[i]) out.push_back(sym[i]);
        sym = std::move(out);
    }

    std::vector<std::string> vocab_;
    std::vector<float> scores_;
    std::unordered_map<std::string, int> lookup_;
};

} // namespace

std::unique_ptr<tokenizer> load_llama2c_tokenizer(const std::string& path, int vocab_size) {
    std::ifstream f(path, std::ios::binary);
    if (!f) throw eval_error(fmt::format("cannot open tokenizer file '{}'", path));
    std::int32_t max_len = 0;
    if (!f.read(reinterpret_cast<char*>(&max_len), 4) || max_len <= 0 || max_len > 4096)
        throw eval_error(fmt::format("'{}' is not a llama2.c tokenizer (bad max_token_length)", path));
    std::vector<std::string> vocab;
    std::vector<float> scores;
    for (int i = 0; i < vocab_size; ++i) {
        float score = 0;
        std::int32_t len = 0;
        if (!f.read(reinterpret_cast<char*>(&score), 4) || !f.read(reinterpret_cast<char*>(&len), 4) || len < 0 || len > max_len)
            throw eval_error(fmt::format("tokenizer '{}' is truncated or corrupt at token {} of {}", path, i, vocab_size));
        std::string s(static_cast<std::size_t>(len), '\0');
        if (!f.read(s.data(), len)) throw eval_error(fmt::format("tokenizer '{}' is truncated at token {}", path, i));
        vocab.push_back(std::move(s));
        scores.push_back(score);
    }
    if (f.peek() != std::char_traits<char>::eof())
        throw eval_error(fmt::format("tokenizer '{}' holds more than the model's {} tokens", path, vocab_size));
    return std::make_unique<sp_tokenizer>(std::move(vocab), std::move(scores));
}

} // namespace pkveval

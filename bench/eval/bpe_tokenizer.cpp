/// @file bpe_tokenizer.cpp
/// GPT-2 style byte-level BPE as stored in GGUF (tokenizer.ggml.model = "gpt2"):
/// 1. control tokens are split out first (only when asked: `special`),
/// 2. the pre-tokenizer's regexes (llama.cpp's list for the model's tokenizer.ggml.pre) cut the
///    text; each regex is applied to the pieces of the previous one, and both the matches and the
///    gaps between them become pieces (llama.cpp's unicode_regex_split),
/// 3. each piece's bytes are mapped to printable code points (bytes_to_unicode) and merged by
///    merge rank, lowest rank first, leftmost on ties.
/// Regexes run in PCRE2 with UTF and UCP, so \p{L}, \p{N} and \s are Unicode-aware.

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <array>
#include <limits>
#include <memory>
#include <unordered_map>

#include <fmt/format.h>

#include "eval_error.hpp"
#include "tokenizer.hpp"

namespace pkveval {
namespace {

const char* const gpt2_regex = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
const char* const llama3_regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
const char* const qwen2_regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

/// llama.cpp's regex list for a tokenizer.ggml.pre name.
std::vector<std::string> pre_tokenizer_regexes(const std::string& pre) {
    if (pre == "smollm" || pre == "starcoder" || pre == "refact" || pre == "command-r" || pre == "codeshell" || pre == "exaone" ||
        pre == "minerva")
        return {R"(\p{N})", gpt2_regex};
    if (pre == "gpt2" || pre == "gpt-2" || pre == "mpt" || pre == "olmo" || pre == "jais" || pre == "default") return {gpt2_regex};
    if (pre == "llama3" || pre == "llama-v3" || pre == "llama-bpe" || pre == "falcon3" || pre == "smaug-bpe") return {llama3_regex};
    if (pre == "qwen2" || pre == "stablelm2" || pre == "deepseek-r1-qwen") return {qwen2_regex};
    throw eval_error(fmt::format("unsupported pre-tokenizer '{}' (supported: smollm, starcoder, gpt2, llama-bpe, qwen2 and aliases)", pre));
}

struct code_deleter {
    void operator()(pcre2_code* c) const { pcre2_code_free(c); }
};
struct match_deleter {
    void operator()(pcre2_match_data* m) const { pcre2_match_data_free(m); }
};

class regex {
public:
    explicit regex(const std::string& pattern) {
        int err = 0;
        PCRE2_SIZE off = 0;
        code_.reset(pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.c_str()), PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP, &err, &off,
                                  nullptr));
        if (!code_) {
            std::array<PCRE2_UCHAR, 256> msg{};
            pcre2_get_error_message(err, msg.data(), msg.size());
            throw eval_error(fmt::format("bad pre-tokenizer regex at {}: {}", off, reinterpret_cast<const char*>(msg.data())));
        }
        pcre2_jit_compile(code_.get(), PCRE2_JIT_COMPLETE);  // optional speed-up; falls back silently
    }
    /// Splits `s` into matches and the gaps between them, in order.
    void split(std::string_view s, std::vector<std::string>& out) const {
        std::unique_ptr<pcre2_match_data, match_deleter> md(pcre2_match_data_create_from_pattern(code_.get(), nullptr));
        std::size_t pos = 0, gap = 0;
        std::uint32_t opts = 0;
        while (pos <= s.size()) {
            const int rc = pcre2_match(code_.get(), reinterpret_cast<PCRE2_SPTR>(s.data()), s.size(), pos, opts, md.get(), nullptr);
            if (rc == PCRE2_ERROR_NOMATCH) break;
            if (rc < 0) {
                std::array<PCRE2_UCHAR, 256> msg{};
                pcre2_get_error_message(rc, msg.data(), msg.size());
                throw eval_error(fmt::format("text cannot be tokenized: {}", reinterpret_cast<const char*>(msg.data())));
            }
            const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md.get());
            const std::size_t b = ov[0], e = ov[1];
            if (b > gap) out.emplace_back(s.substr(gap, b - gap));
            if (e > b) out.emplace_back(s.substr(b, e - b));
            gap = e;
            if (e == b) {  // empty match: step one code point (none of the patterns above can, but be safe)
                if (b >= s.size()) break;
                pos = b + 1;
                while (pos < s.size() && (static_cast<unsigned char>(s[pos]) & 0xC0) == 0x80) ++pos;
            } else {
                pos = e;
            }
            opts = PCRE2_NO_UTF_CHECK;  // checked on the first call
        }
        if (gap < s.size()) out.emplace_back(s.substr(gap));
    }

private:
    std::unique_ptr<pcre2_code, code_deleter> code_;
};

void append_utf8(std::string& s, std::uint32_t cp) {
    if (cp < 0x80) {
        s += static_cast<char>(cp);
    } else if (cp < 0x800) {
        s += static_cast<char>(0xC0 | (cp >> 6));
        s += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
        s += static_cast<char>(0xE0 | (cp >> 12));
        s += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
        s += static_cast<char>(0x80 | (cp & 0x3F));
    }
}

/// Byte length of the UTF-8 sequence starting with `c` (1 for stray continuation bytes).
std::size_t utf8_len(unsigned char c) { return c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 1; }

class bpe_tokenizer final : public tokenizer {
public:
    explicit bpe_tokenizer(const bpe_vocab& v) : v_(v) {
        // GPT-2 bytes_to_unicode: printable Latin-1 bytes map to themselves, the rest to 256 + n.
        int n = 0;
        for (int b = 0; b < 256; ++b) {
            const bool keep = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
            const std::uint32_t cp = keep ? static_cast<std::uint32_t>(b) : static_cast<std::uint32_t>(256 + n++);
            append_utf8(byte_to_str_[b], cp);
            str_to_byte_.emplace(byte_to_str_[b], static_cast<unsigned char>(b));
        }
        for (int i = 0; i < static_cast<int>(v_.tokens.size()); ++i) {
            ids_.emplace(v_.tokens[i], i);
            if (i < static_cast<int>(v_.token_types.size()) && v_.token_types[i] == 3 && !v_.tokens[i].empty()) control_.push_back(i);
        }
        for (int r = 0; r < static_cast<int>(v_.merges.size()); ++r) {
            const std::string& m = v_.merges[r];
            const auto sp = m.find(' ', 1);  // byte-level symbols never contain a raw space
            if (sp == std::string::npos) throw eval_error(fmt::format("malformed BPE merge #{}: '{}'", r, m));
            ranks_.emplace(m, r);
        }
        for (const auto& re : pre_tokenizer_regexes(v_.pre)) regexes_.emplace_back(re);
    }

    std::vector<int> encode(std::string_view text, bool bos, bool special) const override {
        std::vector<int> ids;
        if (bos) {
            if (v_.bos < 0) throw eval_error("this tokenizer has no BOS token");
            ids.push_back(v_.bos);
        }
        std::size_t start = 0;
        while (start < text.size()) {
            std::size_t hit = text.size();
            int hit_id = -1;
            if (special) {
                for (int id : control_) {  // earliest occurrence, longest token on a tie
                    const auto p = text.find(v_.tokens[id], start);
                    if (p != std::string_view::npos &&
                        (p < hit || (p == hit && hit_id >= 0 && v_.tokens[id].size() > v_.tokens[hit_id].size()))) {
                        hit = p;
                        hit_id = id;
                    }
                }
            }
            encode_plain(text.substr(start, hit - start), ids);
            if (hit_id < 0) break;
            ids.push_back(hit_id);
            start = hit + v_.tokens[hit_id].size();
        }
        return ids;
    }

    std::string decode(int id, int /*prev*/) const override {
        if (id < 0 || id >= vocab_size()) throw eval_error(fmt::format("token id {} out of range", id));
        const std::string& t = v_.tokens[id];
        std::string out;
        for (std::size_t i = 0; i < t.size();) {
            const std::size_t len = std::min(utf8_len(static_cast<unsigned char>(t[i])), t.size() - i);
            auto it = str_to_byte_.find(t.substr(i, len));
            if (it != str_to_byte_.end())
                out += static_cast<char>(it->second);
            else
                out += t.substr(i, len);  // not a byte-level symbol (e.g. an added token): as is
            i += len;
        }
        return out;
    }
    int bos_id() const override { return v_.bos; }
    int eos_id() const override { return v_.eos; }
    int vocab_size() const override { return static_cast<int>(v_.tokens.size()); }
    bool adds_bos() const override { return v_.add_bos; }

private:
    void encode_plain(std::string_view text, std::vector<int>& ids) const {
        if (text.empty()) return;
        std::vector<std::string> pieces{std::string(text)};
        for (const auto& re : regexes_) {
            std::vector<std::string> next;
            for (const auto& p : pieces) re.split(p, next);
            pieces = std::move(next);
        }
        for (const auto& p : pieces) encode_piece(p, ids);
    }

    void encode_piece(const std::string& piece, std::vector<int>& ids) const {
        std::vector<std::string> sym;
        for (unsigned char c : piece) sym.push_back(byte_to_str_[c]);
        // Pieces are words: the quadratic rescan is cheap here.
        while (sym.size() > 1) {
            int best = std::numeric_limits<int>::max();
            std::size_t at = 0;
            for (std::size_t i = 0; i + 1 < sym.size(); ++i) {
                auto it = ranks_.find(sym[i] + " " + sym[i + 1]);
                if (it != ranks_.end() && it->second < best) {
                    best = it->second;
                    at = i;
                }
            }
            if (best == std::numeric_limits<int>::max()) break;
            sym[at] += sym[at + 1];
            sym.erase(sym.begin() + static_cast<std::ptrdiff_t>(at) + 1);
        }
        for (const auto& s : sym) {
            auto it = ids_.find(s);
            if (it != ids_.end()) {
                ids.push_back(it->second);
                continue;
            }
            if (v_.unk < 0) throw eval_error(fmt::format("BPE symbol '{}' is not in the vocabulary and there is no <unk>", s));
            ids.push_back(v_.unk);
        }
    }

    bpe_vocab v_;
    std::array<std::string, 256> byte_to_str_;
    std::unordered_map<std::string, unsigned char> str_to_byte_;
    std::unordered_map<std::string, int> ids_;
    std::unordered_map<std::string, int> ranks_;
    std::vector<int> control_;
    std::vector<regex> regexes_;
};

}  // namespace

std::unique_ptr<tokenizer> make_bpe_tokenizer(const bpe_vocab& vocab) { return std::make_unique<bpe_tokenizer>(vocab); }

}  // namespace pkveval

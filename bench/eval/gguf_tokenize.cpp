/// @file gguf_tokenize.cpp
/// gguf-tokenize: the token ids of standard input under a GGUF file's tokenizer, one per line
/// (tools/check-gguf-tokenizer.py compares them with reference tokenizers).
///
///   gguf-tokenize [--special] [--bos] [--time] MODEL.gguf < text
///
/// --special: control tokens written in the text are recognised; --bos: BOS first; --time: the
/// times of reading the file, building the tokenizer and encoding, on standard error.

#include <chrono>
#include <cstdio>
#include <iostream>
#include <iterator>
#include <string>

#include <fmt/format.h>

#include "eval_error.hpp"
#include "gguf_tokenizer.hpp"

int main(int argc, char** argv) {
    bool special = false, bos = false, timed = false;
    std::string path;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        if (a == "--special")
            special = true;
        else if (a == "--bos")
            bos = true;
        else if (a == "--time")
            timed = true;
        else if (!a.empty() && a[0] != '-' && path.empty())
            path = a;
        else {
            fmt::print(stderr,
                       "gguf-tokenize: unexpected argument '{}'\nusage: gguf-tokenize [--special] [--bos] [--time] MODEL.gguf < text\n", a);
            return 2;
        }
    }
    if (path.empty()) {
        fmt::print(stderr, "usage: gguf-tokenize [--special] [--bos] [--time] MODEL.gguf < text\n");
        return 2;
    }
    try {
        using clock = std::chrono::steady_clock;
        auto ms = [](clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); };
        const auto t0 = clock::now();
        const pkveval::gguf_file g = pkveval::gguf_file::load(path);
        const auto t1 = clock::now();
        const auto tok = pkveval::make_gguf_tokenizer(g);
        const auto t2 = clock::now();
        const std::string text(std::istreambuf_iterator<char>(std::cin), {});
        const auto t3 = clock::now();
        const std::vector<int> ids = tok->encode(text, bos, special);
        const auto t4 = clock::now();
        std::string out;
        for (int id : ids) out += fmt::format("{}\n", id);
        std::fwrite(out.data(), 1, out.size(), stdout);
        if (timed)
            fmt::print(stderr, "read {:.1f} ms, tokenizer ({} tokens) {:.1f} ms, encode ({} bytes -> {} ids) {:.1f} ms\n", ms(t1 - t0),
                       tok->vocab_size(), ms(t2 - t1), text.size(), ids.size(), ms(t4 - t3));
    } catch (const pkveval::eval_error& e) {
        fmt::print(stderr, "gguf-tokenize: {}\n", e.what());
        return 1;
    }
    return 0;
}

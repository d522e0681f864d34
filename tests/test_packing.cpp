// core/packing.hpp: packing of quantization codes into 32-bit words.
#include <cstdint>
#include <random>
#include <vector>

#include <doctest/doctest.h>

#include "core/packing.hpp"

namespace core = patternkv::core;

TEST_CASE("codes_per_word and words_for_codes") {
    CHECK(core::codes_per_word(2) == 16);
    CHECK(core::codes_per_word(3) == 10);
    CHECK(core::codes_per_word(4) == 8);
    CHECK(core::codes_per_word(8) == 4);
    for (int bits : {2, 3, 4, 8}) {
        CAPTURE(bits);
        const int per = 32 / bits;
        CHECK(core::words_for_codes(0, bits) == 0);
        for (int n = 1; n <= 600; ++n) {
            const int expected = n / per + (n % per != 0 ? 1 : 0);
            if (core::words_for_codes(n, bits) != expected) FAIL_CHECK("n=" << n << " got " << core::words_for_codes(n, bits));
        }
    }
    CHECK(core::words_for_codes(128, 2) == 8);
    CHECK(core::words_for_codes(128, 3) == 13);
    CHECK(core::words_for_codes(128, 4) == 16);
    CHECK(core::words_for_codes(128, 8) == 32);
    CHECK(core::supported_bits(2));
    CHECK(core::supported_bits(3));
    CHECK(core::supported_bits(4));
    CHECK(core::supported_bits(8));
    CHECK_FALSE(core::supported_bits(1));
    CHECK_FALSE(core::supported_bits(5));
    CHECK_FALSE(core::supported_bits(16));
}

TEST_CASE("pack_codes / unpack_codes round trip, layout and zero padding (seed 4242)") {
    std::mt19937 rng(4242u);
    const int lengths[] = {1, 2, 3, 7, 8, 9, 10, 11, 15, 16, 17, 31, 32, 33, 63, 64, 65, 127, 128, 129, 255, 256, 511, 512, 4096};
    for (int bits : {2, 3, 4, 8}) {
        for (int n : lengths) {
            for (int rep = 0; rep < 4; ++rep) {
                CAPTURE(bits);
                CAPTURE(n);
                CAPTURE(rep);
                const std::uint32_t maxc = (1u << bits) - 1u;
                std::vector<std::uint8_t> codes(n);
                for (auto& c : codes) c = static_cast<std::uint8_t>(rng() % (maxc + 1u));
                if (rep == 1)
                    for (auto& c : codes) c = static_cast<std::uint8_t>(maxc);  // all bits set
                if (rep == 2)
                    for (auto& c : codes) c = 0;
                const int nw = core::words_for_codes(n, bits);
                // canary after the words: pack must write exactly nw words
                std::vector<std::uint32_t> words(nw + 2, 0xdeadbeefu);
                core::pack_codes(codes.data(), n, bits, words.data());
                CHECK(words[nw] == 0xdeadbeefu);
                CHECK(words[nw + 1] == 0xdeadbeefu);
                // documented layout: code i in word i / per at shift (i % per) * bits
                const int per = 32 / bits;
                bool layout_ok = true;
                for (int i = 0; i < n; ++i)
                    if (((words[i / per] >> ((i % per) * bits)) & maxc) != codes[i]) layout_ok = false;
                CHECK(layout_ok);
                // unused bits zero: rebuild each word from the codes alone and compare all 32 bits
                bool zero_ok = true;
                for (int w = 0; w < nw; ++w) {
                    std::uint32_t expect = 0;
                    for (int s = 0; s < per && w * per + s < n; ++s) expect |= static_cast<std::uint32_t>(codes[w * per + s]) << (s * bits);
                    if (words[w] != expect) zero_ok = false;
                    if (bits == 3 && (words[w] >> 30) != 0) zero_ok = false;  // 2 spare bits at 3 bits
                }
                CHECK(zero_ok);
                std::vector<std::uint8_t> back(n, 0xee);
                core::unpack_codes(words.data(), n, bits, back.data());
                CHECK(back == codes);
                bool single_ok = true;
                for (int i = 0; i < n; ++i)
                    if (core::unpack_code(words.data(), i, bits) != codes[i]) single_ok = false;
                CHECK(single_ok);
            }
        }
    }
}

TEST_CASE("pack_codes clears stale words") {
    std::vector<std::uint8_t> codes(17, 1);
    std::vector<std::uint32_t> words(core::words_for_codes(17, 2), 0xffffffffu);
    core::pack_codes(codes.data(), 17, 2, words.data());
    CHECK(words[0] == 0x55555555u);
    CHECK(words[1] == 0x1u);  // the one code of the second word, everything else zero
}

#!/usr/bin/env python3
"""Compares the evaluation runner's SentencePiece tokenizer (GGUF tokenizer.ggml.model = "llama")
with reference tokenizers, id for id.

usage: tools/check-gguf-tokenizer.py MODEL.gguf TOKENIZE_BINARY [--text FILE]... [--llama-tokenize BIN]

TOKENIZE_BINARY is build/bench/eval/gguf-tokenize. The texts: a set of tricky strings, seeded
random mixtures of tricky fragments, and /usr/share/common-licenses/GPL-3 (plus any --text FILE).

References:
* plain text (special = false) -- the `sentencepiece` library on a ModelProto rebuilt from the
  file's vocabulary, scores and token types (BPE, byte fallback, identity normalizer, dummy prefix
  = tokenizer.ggml.add_space_prefix). That is the tokenizer.model the GGUF was converted from, up to
  the converter's respelling of user-defined space runs ("▁▁" -> "  "), which is undone here.
  sentencepiece never parses control tokens in text, as llama.cpp with parse_special = false.
* control tokens written in the text (special = true) -- transformers' GGUF tokenizer
  (get_gguf_tokenizer + convert_gguf_tokenizer, the backend AutoTokenizer builds from a GGUF), which
  always splits control tokens out. Its plain-text ids are also compared, for information only:
  it rebuilds merges from token order and cannot know Gemma's space-run tokens are user-defined,
  so it cuts runs of more than 31 spaces differently from sentencepiece and llama.cpp.
* with --llama-tokenize BIN (llama.cpp's llama-tokenize), llama.cpp itself, in both modes. It matches
  its user-defined tokens against the text before spelling spaces U+2581, with Gemma's space runs
  written as real spaces, so a U+2581 written in the text next to spaces does not join a run there
  (it does in sentencepiece, transformers and here): texts holding a U+2581 are compared for
  information only.

Prints one line per group (strings and tokens compared, mismatches) and exits 1 on any mismatch
against a reference, 2 on bad usage or when a reference cannot be imported. Needs:
    python3 -m venv /tmp/venv && /tmp/venv/bin/pip install gguf numpy sentencepiece protobuf transformers tokenizers
"""

import argparse
import os
import random
import subprocess
import sys
import time
import types

try:
    from gguf import GGUFReader
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2 as sp_pb2
except ImportError as e:  # pragma: no cover - depends on the environment
    sys.exit(f"check-gguf-tokenizer: cannot import a reference ({e}).\n"
             "Install them into a virtual environment and run this script with that python:\n"
             "    python3 -m venv /tmp/venv && /tmp/venv/bin/pip install gguf numpy sentencepiece protobuf transformers tokenizers\n"
             "    /tmp/venv/bin/python tools/check-gguf-tokenizer.py MODEL.gguf TOKENIZE_BINARY")

GPL3 = "/usr/share/common-licenses/GPL-3"
MARK = "\u2581"  # SentencePiece's spelling of ' '

TRICKY = [
    "Hello world", "Hello, world!", "hello", " hello", "  hello", "hello ", "hello  ", " ", "  ", "   ", "",
    "a  b   c    d     e", " " * 31 + "x", " " * 32 + "x", " " * 33 + "x", " " * 40, " " * 70 + "y",
    "\n", "\n\n", "\n\n\n\n\n", "\n" * 40, "line one\nline two\n\nparagraph\n", "\t", "x\t\ty", "\t" * 35 + "z",
    "a\r\nb\r\n", " \n \n ", "\n hello", "mixed \t\n  \n\t whitespace",
    "digits 0123456789 and 3.14159, -42, 1e10, 2024-12-01", "123456789012345678901234567890",
    "don't won't we'll they're I'd it's", "punctuation!?.,;:'\"()[]{}<>@#$%^&*_-+=|\\/~`",
    "naïve café Grüße façade Ångström", "日本語のテキストと東京タワー", "中文文本，標點符號。", "한국어 텍스트",
    "Привет, мир! Ελληνικά", "مرحبا بالعالم", "שלום עולם", "हिन्दी पाठ", "ภาษาไทย",
    "emoji 🙂 ok 👩‍👩‍👧 🏳️‍🌈 👍🏽", "🫨🪿🫎", "math ∑∫∂√∞ ≤≥≠ ℌ𝔢𝔩𝔩𝔬 𝟙𝟚𝟛", "ﬁ ﬂ ligatures ① ②",
    "e\u0301 combining, \u00a0nbsp, \u2009thin, \u200bzero-width, \u2028line-sep", "\ufeffBOM at start",
    "\x00\x01\x02 control bytes \x7f", "▁already▁escaped ▁", "<0x41><0x0A>", "<unk> <pad> <bos> <eos>",
    "<start_of_turn>user", "<unused5> <mask>", "[multimodal]", "<start_of_image>",
    "<table><tr><td>x</td></tr></table>", "<b>bold</b> <i>it</i> <code>x</code>", "  <b>  x  </b>  ",
    "def f(x):\n    return x ** 2  # square\n", "int main() {\n\tprintf(\"%d\\n\", 42);\n}\n",
    "https://example.com/path?query=1&b=2#frag", "user@example.com", "GNU GENERAL PUBLIC LICENSE\n   Version 3, 29 June 2007",
]

SPECIAL = [
    "<start_of_turn>user\nWrite a poem.<end_of_turn>\n<start_of_turn>model\n", "<bos>text<eos>", "<bos><bos>",
    "<unused5><unused6241>", "<pad><mask><unk>", "x<start_of_image>y<end_of_image>z", "[multimodal] image",
    "<start_of_turn> spaced <end_of_turn>", "plain text only", "<b>bold</b>\n\n<start_of_turn>",
]

FRAGMENTS = [" ", "  ", "   ", "\n", "\n\n", "\t", "a", "the", "ing", "tion", " the", "é", "ü", "🙂", "東京", "한",
             "<b>", "</b>", "<", ">", "0", "123", "ﬁ", "\u00a0", "▁", ".", ",", "'s", "Hello", "WORLD", "\r\n"]


def load_vocab(path):
    r = GGUFReader(path)
    f = r.fields

    def arr(name, conv):
        fl = f[name]
        return [conv(fl.parts[i]) for i in fl.data]

    def scalar(name, default):
        if name not in f:
            return default
        fl = f[name]
        v = fl.parts[fl.data[0]]
        return bytes(v).decode() if fl.types[0].name == "STRING" else v[0]

    model = scalar("tokenizer.ggml.model", "")
    if model != "llama":
        sys.exit(f"check-gguf-tokenizer: {path} has tokenizer.ggml.model '{model}', not 'llama' (SentencePiece)")
    toks = arr("tokenizer.ggml.tokens", lambda p: bytes(p).decode("utf-8"))
    scores = arr("tokenizer.ggml.scores", lambda p: float(p[0])) if "tokenizer.ggml.scores" in f else [0.0] * len(toks)
    ttypes = arr("tokenizer.ggml.token_type", lambda p: int(p[0])) if "tokenizer.ggml.token_type" in f else [1] * len(toks)
    meta = dict(bos=int(scalar("tokenizer.ggml.bos_token_id", 1)), eos=int(scalar("tokenizer.ggml.eos_token_id", 2)),
                unk=int(scalar("tokenizer.ggml.unknown_token_id", 0)), pad=int(scalar("tokenizer.ggml.padding_token_id", -1)),
                add_space_prefix=bool(scalar("tokenizer.ggml.add_space_prefix", True)))
    return toks, scores, ttypes, meta


def sentencepiece_reference(toks, scores, ttypes, meta):
    m = sp_pb2.ModelProto()
    for t, s, ty in zip(toks, scores, ttypes):
        p = m.pieces.add()
        # llama.cpp's converter writes user-defined "▁" as ' ' ("pre-normalize user-defined spaces"):
        # back to the spelling sentencepiece matches against its escaped text
        p.piece = t.replace(" ", "\u2581") if ty == 4 else t
        p.score = s
        p.type = ty
    m.trainer_spec.model_type = sp_pb2.TrainerSpec.BPE
    m.trainer_spec.vocab_size = len(toks)
    m.trainer_spec.byte_fallback = True
    m.trainer_spec.unk_id, m.trainer_spec.bos_id = meta["unk"], meta["bos"]
    m.trainer_spec.eos_id, m.trainer_spec.pad_id = meta["eos"], meta["pad"]
    m.normalizer_spec.name = "identity"
    m.normalizer_spec.add_dummy_prefix = meta["add_space_prefix"]
    m.normalizer_spec.remove_extra_whitespaces = False
    m.normalizer_spec.escape_whitespaces = True
    sp = spm.SentencePieceProcessor()
    sp.LoadFromSerializedProto(m.SerializeToString())
    return sp


def transformers_reference(path):
    """transformers' tokenizer for a GGUF, or None (with the reason) when it cannot be built."""
    try:
        import transformers  # noqa: F401  (first, so its own torch probe sees the real state)
        try:
            import torch  # noqa: F401
        except ImportError:
            # The GGUF metadata reader imports torch for tensors only; a stub lets the tokenizer load.
            class _Stub(types.ModuleType):
                def __getattr__(self, name):
                    return type(name, (), {})
            sys.modules["torch"] = _Stub("torch")
        from transformers.integrations.gguf import convert_gguf_tokenizer, get_gguf_tokenizer
        arch, tok_dict, _ = get_gguf_tokenizer(path)
        backend, _ = convert_gguf_tokenizer(arch, tok_dict)
        return backend, None
    except Exception as e:  # pragma: no cover - depends on the environment
        return None, f"{type(e).__name__}: {e}"


def ours(binary, model, text, special=False):
    args = [binary] + (["--special"] if special else []) + [model]
    r = subprocess.run(args, input=text.encode("utf-8"), capture_output=True)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({r.returncode}): {r.stderr.decode(errors='replace')}")
    return [int(x) for x in r.stdout.split()]


def fnv1a(ids):
    h = 14695981039346656037
    for i in ids:
        for k in range(4):
            h ^= (i >> (8 * k)) & 0xFF
            h = (h * 1099511628211) & 0xFFFFFFFFFFFFFFFF
    return h


def describe(text, got, want, toks):
    k = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
    show = lambda ids: " ".join(f"{i}:{toks[i]!r}" for i in ids[max(0, k - 2):k + 4])
    return (f"    text {text[:60]!r}{'...' if len(text) > 60 else ''}: {len(got)} ids vs {len(want)}, first difference at {k}\n"
            f"      ours: {show(got)}\n      ref:  {show(want)}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model")
    ap.add_argument("binary")
    ap.add_argument("--text", action="append", default=[], help="another text file to compare (plain text)")
    ap.add_argument("--llama-tokenize", metavar="BIN", help="llama.cpp's llama-tokenize, a third reference")
    a = ap.parse_args()
    if not os.access(a.binary, os.X_OK):
        sys.exit(f"check-gguf-tokenizer: {a.binary} is not an executable (build/bench/eval/gguf-tokenize)")

    t0 = time.time()
    toks, scores, ttypes, meta = load_vocab(a.model)
    sp = sentencepiece_reference(toks, scores, ttypes, meta)
    hf, why = transformers_reference(a.model)
    print(f"{a.model}: {len(toks)} tokens, add_space_prefix {meta['add_space_prefix']}; references built in {time.time() - t0:.1f} s")

    rng = random.Random(20240601)
    mixtures = ["".join(rng.choice(FRAGMENTS) for _ in range(300)) for _ in range(20)]
    texts = {"GPL-3": open(GPL3, encoding="utf-8").read()}
    for p in a.text:
        texts[p] = open(p, encoding="utf-8").read()

    failed = False
    hf_plain = [0, 0, []]  # strings compared, agreeing, texts that differ

    def group(name, items, special):
        nonlocal failed
        n_tok = bad = 0
        details = []
        for text in items:
            got = ours(a.binary, a.model, text, special)
            want = hf.encode(text, add_special_tokens=False).ids if special else sp.encode(text)
            n_tok += len(want)
            if got != want:
                bad += 1
                details.append(describe(text, got, want, toks))
            if not special and hf is not None:
                hf_plain[0] += 1
                if hf.encode(text, add_special_tokens=False).ids == want:
                    hf_plain[1] += 1
                else:
                    hf_plain[2].append(text)
        ref = "transformers" if special else "sentencepiece"
        print(f"{name:28s} vs {ref:13s}: {len(items):3d} texts, {n_tok:6d} tokens, {bad} mismatches")
        for d in details[:10]:
            print(d)
        failed |= bad > 0

    group("tricky strings", TRICKY, False)
    group("random fragment mixtures", mixtures, False)
    for name, text in texts.items():
        group(name, [text], False)
        t = time.time()
        ids = ours(a.binary, a.model, text)
        print(f"    {name}: {len(ids)} tokens without BOS, FNV-1a {fnv1a(ids):#018x}"
              f" (with BOS {fnv1a([meta['bos']] + ids):#018x}); gguf-tokenize run {1000 * (time.time() - t):.0f} ms")
    if hf is None:
        print(f"control tokens (special=true): NOT CHECKED, transformers unavailable ({why})")
    else:
        # plain texts too, but not runs of more than 31 spaces (see above)
        group("control tokens in the text", SPECIAL + [t for t in TRICKY if " " * 32 not in t], True)
        print(f"(information) transformers agrees with sentencepiece on {hf_plain[1]} of {hf_plain[0]} plain texts;"
              f" differs on: {', '.join(repr(t[:24]) for t in hf_plain[2])}")
    if a.llama_tokenize:
        def llama_cpp(text, special):
            args = [a.llama_tokenize, "-m", a.model, "--stdin", "--ids", "--no-bos", "--log-disable", "--no-escape"]
            r = subprocess.run(args + ([] if special else ["--no-parse-special"]), input=text.encode("utf-8"), capture_output=True)
            lines = r.stdout.decode().strip().splitlines()
            if r.returncode != 0 or not lines:
                raise RuntimeError(f"llama-tokenize failed ({r.returncode}): {r.stderr.decode(errors='replace')[-500:]}")
            return [int(x) for x in lines[-1].strip("[]").replace(",", " ").split()]

        for special in (False, True):
            items = (SPECIAL if special else []) + TRICKY + mixtures + list(texts.values())
            n_tok = bad = 0
            marked = []
            for text in items:
                got, want = ours(a.binary, a.model, text, special), llama_cpp(text, special)
                n_tok += len(want)
                if got == want:
                    continue
                if MARK in text:
                    marked.append(text)
                else:
                    bad += 1
                    print(describe(text, got, want, toks))
            n_marked = sum(MARK in t for t in items)
            print(f"{'llama.cpp, special=' + str(special).lower():28s} vs llama-tokenize: {len(items):3d} texts, {n_tok:6d} tokens,"
                  f" {bad} mismatches; {len(marked)} of {n_marked} texts holding a U+2581 differ (information)")
            failed |= bad > 0
    print("MISMATCH" if failed else "OK: every id matches the references")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

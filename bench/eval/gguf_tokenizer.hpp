#pragma once
/// @file gguf_tokenizer.hpp
/// The tokenizer of a GGUF file, chosen by tokenizer.ggml.model ("gpt2": byte-level BPE,
/// "llama": SentencePiece-style BPE).

#include <memory>

#include "gguf_reader.hpp"
#include "tokenizer.hpp"

namespace pkveval {

/// The tokenizer described by `g`'s tokenizer.ggml.* metadata; throws eval_error naming the
/// tokenizer kind when it is not supported.
std::unique_ptr<tokenizer> make_gguf_tokenizer(const gguf_file& g);

}  // namespace pkveval

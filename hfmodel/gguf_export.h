#pragma once
// A Hugging Face model folder as a GGUF file that llama.cpp loads (`kvfleet export --gguf`):
// the same weights in F32, llama.cpp's names and conventions, and the folder's tokenizer.
//
// What llama.cpp's convert_hf_to_gguf.py does, for the layouts the cpu engine runs:
//   llama, mistral, yi -> architecture `llama`: Q and K rows (weights and biases) permuted from
//     Hugging Face's "rotate half" rope layout to the interleaved pairs llama.cpp's rope uses;
//     llama3 rope scaling as a `rope_freqs.weight` tensor, linear as rope.scaling.*;
//   qwen2 -> `qwen2` (q/k/v biases), qwen3 -> `qwen3` (per-head q/k norms): NEOX rope, no
//     permutation.
// Tokenizers: byte-level BPE (Llama 3, Qwen) as tokenizer.ggml.model `gpt2` with tokens, token
// types, merges and the pre-tokenizer's name (recognised from its regex: `llama-bpe`, `qwen2`,
// or `gpt2`); SentencePiece-style BPE with byte fallback (Llama 2, Mistral) as `llama` with
// tokens, scores (minus the rank of the merge that makes each token) and token types.

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "common/status.h"

namespace kvfleet::hfmodel {

struct GgufExportSummary {
  std::string architecture;     // general.architecture: llama, qwen2, qwen3
  std::string tokenizer_model;  // tokenizer.ggml.model: gpt2 or llama
  std::string pre_tokenizer;    // tokenizer.ggml.pre (gpt2 only), e.g. llama-bpe
  std::int64_t vocab_size = 0;
  std::size_t tensors = 0;
  std::size_t tensor_bytes = 0;
};

// Loads the folder (config, tokenizer, weights: everything the cpu engine checks) and writes
// `out`. Errors name the folder and what llama.cpp could not be given.
Result<GgufExportSummary> export_gguf(const std::filesystem::path& model_dir,
                                      const std::filesystem::path& out);

// Rows of a [heads * head_dim, cols] projection (or a bias, cols = 1) reordered from Hugging
// Face's rotate-half layout (row i of a head pairs with i + head_dim/2) to interleaved pairs
// (rows 2j and 2j+1): convert_hf_to_gguf.py's permute, reshape (heads, 2, head_dim/2, cols) and
// swap axes 1 and 2.
std::vector<float> permute_rope_rows(const float* w, std::int64_t heads, std::int64_t head_dim,
                                     std::int64_t cols);

}  // namespace kvfleet::hfmodel

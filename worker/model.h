#pragma once
// A Llama-family transformer (llama, mistral, yi, qwen2, qwen3 layouts) for the cpu backend:
// fp32 weights, fp32 compute, KV in a paged pool (kernels/kv_layout.h).
//
// forward() runs one engine step: a batch of sequence chunks (prefill chunks and decode tokens
// together). The linear layers run once over all the batch's tokens, so weights are read once
// per step however many sequences decode; attention runs per sequence over its own blocks.
// A Model is immutable after construction and may be shared by threads; a Workspace is not.

#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "common/model_spec.h"
#include "common/status.h"
#include "kernels/cpu/ops.h"
#include "kernels/cpu/paged_attention.h"
#include "kernels/kv_layout.h"
#include "worker/safetensors.h"
#include "worker/step.h"

namespace kvfleet::worker {

// Reusable buffers for forward(); one per engine thread.
struct Workspace {
  std::vector<float> x, h, q, k, v, attn, gate, up, rows, logits;
  std::vector<std::int64_t> positions;
  kernels::cpu::AttentionScratch attention;
};

class Model {
 public:
  // Checks that this backend can run the architecture (dense Llama layouts, even head_dim,
  // supported rope_scaling, a vocabulary for the byte tokenizer).
  static Status check_supported(const ModelSpec& spec);
  // Seeded random weights: the same seed gives the same model on every machine.
  static Result<std::shared_ptr<const Model>> random(const ModelSpec& spec, std::uint64_t seed);
  // Weights from .safetensors files with Hugging Face names (a file, or a folder of shards).
  static Result<std::shared_ptr<const Model>> load(const ModelSpec& spec, const std::string& path);
  // Writes the weights as one F32 safetensors file with Hugging Face names.
  Status save(const std::string& path) const;
  // Every weight with its Hugging Face name and shape, in a fixed order (embedding, the layers,
  // the final norm, lm_head when untied). The data stays owned by this model.
  std::vector<TensorToWrite> tensors() const;

  const ModelSpec& spec() const { return spec_; }
  // The KV layout this model writes, for a block size and KV dtype.
  kernels::KvLayout kv_layout(std::int64_t block_tokens, DType kv_dtype) const;
  std::int64_t parameter_count() const;
  std::size_t weight_bytes() const { return static_cast<std::size_t>(parameter_count()) * 4; }

  // Runs the chunks, writing their K/V into `kv_pool`. Logits are appended to `logits_out`
  // row by row ([vocab] each) in chunk order: one row per chunk for kLast, one per token for
  // kAll, none for kNone.
  void forward(std::span<const SeqChunk> chunks, const kernels::KvLayout& layout,
               std::byte* kv_pool, Workspace& ws, std::vector<float>& logits_out) const;

 private:
  struct Layer {
    std::vector<float> wq, wk, wv, wo, bq, bk, bv, q_norm, k_norm;
    std::vector<float> w_gate, w_up, w_down, attn_norm, mlp_norm;
  };
  explicit Model(ModelSpec spec);
  // Calls fn(name, shape, storage, init, fan_in) for every tensor in a fixed order; storage is
  // const when `self` is.
  template <typename Self, typename Fn>
  static void visit_tensors(Self& self, Fn&& fn);

  ModelSpec spec_;
  std::vector<float> embed_, final_norm_, lm_head_;  // lm_head_ empty when tied
  std::vector<Layer> layers_;
  kernels::cpu::Rope rope_;
};

}  // namespace kvfleet::worker

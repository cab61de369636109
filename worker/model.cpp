#include "worker/model.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <numbers>

#include "common/check.h"
#include "worker/safetensors.h"

namespace kvfleet::worker {
namespace {

using kernels::cpu::RopeScalingParams;

constexpr std::string_view kDenseTypes[] = {"llama", "mistral", "yi", "qwen2", "qwen3"};

RopeScalingParams rope_params(const ModelSpec& s) {
  RopeScalingParams p;
  if (!s.rope_scaling) return p;
  const RopeScaling& r = *s.rope_scaling;
  p.factor = r.factor;
  p.low_freq_factor = r.low_freq_factor;
  p.high_freq_factor = r.high_freq_factor;
  p.original_max_position = static_cast<double>(r.original_max_position);
  if (r.type == "linear") p.kind = RopeScalingParams::Kind::kLinear;
  if (r.type == "llama3") p.kind = RopeScalingParams::Kind::kLlama3;
  return p;
}

// splitmix64: a deterministic, platform-independent stream for seeded weights.
struct SplitMix {
  std::uint64_t state;
  std::uint64_t next() {
    std::uint64_t z = (state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  double uniform() { return (static_cast<double>(next() >> 11) + 0.5) * 0x1.0p-53; }
};

std::uint64_t name_hash(const std::string& s) {
  std::uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  return h;
}

// Normal(0, stddev) values, Box-Muller.
void fill_normal(std::vector<float>& v, std::uint64_t seed, double stddev) {
  SplitMix rng{seed};
  for (size_t i = 0; i < v.size(); i += 2) {
    const double r = std::sqrt(-2.0 * std::log(rng.uniform())) * stddev;
    const double theta = 2.0 * std::numbers::pi * rng.uniform();
    v[i] = static_cast<float>(r * std::cos(theta));
    if (i + 1 < v.size()) v[i + 1] = static_cast<float>(r * std::sin(theta));
  }
}

enum class Init { kOnes, kZeros, kEmbedding, kLinear };

}  // namespace

Model::Model(ModelSpec spec)
    : spec_(std::move(spec)), rope_(spec_.head_dim, spec_.rope_theta, rope_params(spec_)) {
  layers_.resize(static_cast<size_t>(spec_.num_layers));
}

Status Model::check_supported(const ModelSpec& s) {
  const std::string where = "model '" + s.name + "'";
  if (std::find(std::begin(kDenseTypes), std::end(kDenseTypes), s.model_type) ==
      std::end(kDenseTypes)) {
    return invalid_argument(where + ": model_type '" + s.model_type +
                            "' cannot run on the cpu engine (it runs dense llama, mistral, yi, "
                            "qwen2 and qwen3 layouts)");
  }
  if (s.moe || s.mla) {
    return invalid_argument(where +
                            ": mixture-of-experts and latent attention cannot run on the "
                            "cpu engine");
  }
  if (s.head_dim % 2 != 0) {
    return invalid_argument(where + ": head_dim " + std::to_string(s.head_dim) +
                            " is odd; rotary embeddings need an even head_dim");
  }
  if (s.rope_scaling && s.rope_scaling->type != "default" && s.rope_scaling->type != "linear" &&
      s.rope_scaling->type != "llama3") {
    return invalid_argument(where + ": rope_scaling type '" + s.rope_scaling->type +
                            "' is not supported (default, linear, llama3)");
  }
  if (s.rope_scaling && s.rope_scaling->type == "llama3" &&
      s.rope_scaling->original_max_position <= 0) {
    return invalid_argument(where + ": llama3 rope_scaling needs original_max_position_embeddings");
  }
  if (s.sliding_window > 0 &&
      (s.max_position_embeddings == 0 || s.sliding_window < s.max_position_embeddings)) {
    return invalid_argument(where + ": sliding_window " + std::to_string(s.sliding_window) +
                            " is not supported by the cpu engine (it attends to the whole "
                            "context)");
  }
  if (s.vocab_size < 258) {
    return invalid_argument(where + ": vocab_size " + std::to_string(s.vocab_size) +
                            " cannot hold the byte-level tokenizer (256 bytes + BOS + EOS)");
  }
  const std::int64_t elements = s.num_layers * (s.hidden_size * s.num_heads * s.head_dim * 2 +
                                                3 * s.hidden_size * s.intermediate_size);
  if (elements > (std::int64_t{1} << 36)) {
    return invalid_argument(where + " is too large for the cpu engine (" +
                            std::to_string(elements) + " weights)");
  }
  return Status::ok();
}

template <typename Self, typename Fn>
void Model::visit_tensors(Self& self, Fn&& fn) {
  const std::int64_t d = self.spec_.hidden_size, hd = self.spec_.head_dim;
  const std::int64_t q = self.spec_.num_heads * hd, kv = self.spec_.num_kv_heads * hd;
  const std::int64_t ffn = self.spec_.intermediate_size, vocab = self.spec_.vocab_size;
  fn("model.embed_tokens.weight", std::vector<std::int64_t>{vocab, d}, self.embed_,
     Init::kEmbedding, d);
  for (std::int64_t i = 0; i < self.spec_.num_layers; ++i) {
    auto& L = self.layers_[static_cast<size_t>(i)];
    const std::string p = "model.layers." + std::to_string(i) + ".";
    fn(p + "input_layernorm.weight", std::vector<std::int64_t>{d}, L.attn_norm, Init::kOnes, d);
    fn(p + "self_attn.q_proj.weight", std::vector<std::int64_t>{q, d}, L.wq, Init::kLinear, d);
    fn(p + "self_attn.k_proj.weight", std::vector<std::int64_t>{kv, d}, L.wk, Init::kLinear, d);
    fn(p + "self_attn.v_proj.weight", std::vector<std::int64_t>{kv, d}, L.wv, Init::kLinear, d);
    if (self.spec_.attention_bias) {
      fn(p + "self_attn.q_proj.bias", std::vector<std::int64_t>{q}, L.bq, Init::kZeros, d);
      fn(p + "self_attn.k_proj.bias", std::vector<std::int64_t>{kv}, L.bk, Init::kZeros, d);
      fn(p + "self_attn.v_proj.bias", std::vector<std::int64_t>{kv}, L.bv, Init::kZeros, d);
    }
    if (self.spec_.qk_norm) {
      fn(p + "self_attn.q_norm.weight", std::vector<std::int64_t>{hd}, L.q_norm, Init::kOnes, hd);
      fn(p + "self_attn.k_norm.weight", std::vector<std::int64_t>{hd}, L.k_norm, Init::kOnes, hd);
    }
    fn(p + "self_attn.o_proj.weight", std::vector<std::int64_t>{d, q}, L.wo, Init::kLinear, q);
    fn(p + "post_attention_layernorm.weight", std::vector<std::int64_t>{d}, L.mlp_norm, Init::kOnes,
       d);
    fn(p + "mlp.gate_proj.weight", std::vector<std::int64_t>{ffn, d}, L.w_gate, Init::kLinear, d);
    fn(p + "mlp.up_proj.weight", std::vector<std::int64_t>{ffn, d}, L.w_up, Init::kLinear, d);
    fn(p + "mlp.down_proj.weight", std::vector<std::int64_t>{d, ffn}, L.w_down, Init::kLinear, ffn);
  }
  fn("model.norm.weight", std::vector<std::int64_t>{d}, self.final_norm_, Init::kOnes, d);
  if (!self.spec_.tie_word_embeddings) {
    fn("lm_head.weight", std::vector<std::int64_t>{vocab, d}, self.lm_head_, Init::kLinear, d);
  }
}

Result<std::shared_ptr<const Model>> Model::random(const ModelSpec& spec, std::uint64_t seed) {
  KVFLEET_RETURN_IF_ERROR(check_supported(spec));
  std::shared_ptr<Model> m(new Model(spec));
  visit_tensors(*m, [&](const std::string& name, const std::vector<std::int64_t>& shape,
                        std::vector<float>& v, Init init, std::int64_t fan_in) {
    std::int64_t n = 1;
    for (auto s : shape) n *= s;
    v.assign(static_cast<size_t>(n), 0.0f);
    switch (init) {
      case Init::kOnes: std::fill(v.begin(), v.end(), 1.0f); break;
      case Init::kZeros: break;
      case Init::kEmbedding: fill_normal(v, seed ^ name_hash(name), 1.0); break;
      case Init::kLinear:
        fill_normal(v, seed ^ name_hash(name), 1.0 / std::sqrt(static_cast<double>(fan_in)));
        break;
    }
  });
  return std::shared_ptr<const Model>(std::move(m));
}

Result<std::shared_ptr<const Model>> Model::load(const ModelSpec& spec, const std::string& path) {
  KVFLEET_RETURN_IF_ERROR(check_supported(spec));
  namespace fs = std::filesystem;
  std::vector<std::string> files;
  std::error_code ec;
  if (fs::is_directory(path, ec)) {
    for (const auto& entry : fs::directory_iterator(path, ec)) {
      if (entry.path().extension() == ".safetensors") files.push_back(entry.path().string());
    }
    std::sort(files.begin(), files.end());
    if (files.empty()) return not_found("no .safetensors files in '" + path + "'");
  } else {
    files.push_back(path);
  }
  std::vector<std::unique_ptr<SafetensorsFile>> opened;
  for (const auto& f : files) {
    KVFLEET_ASSIGN_OR_RETURN(auto file, SafetensorsFile::open(f));
    opened.push_back(std::move(file));
  }
  std::shared_ptr<Model> m(new Model(spec));
  Status status;
  visit_tensors(*m, [&](const std::string& name, const std::vector<std::int64_t>& shape,
                        std::vector<float>& v, Init, std::int64_t) {
    if (!status.is_ok()) return;
    for (const auto& file : opened) {
      if (!file->contains(name)) continue;
      auto data = file->read_f32(name, shape);
      if (!data.is_ok()) {
        status = data.status();
        return;
      }
      v = std::move(data).value();
      return;
    }
    status = not_found("weights '" + path + "' have no tensor '" + name + "' (model '" + spec.name +
                       "')");
  });
  KVFLEET_RETURN_IF_ERROR(status);
  return std::shared_ptr<const Model>(std::move(m));
}

std::vector<TensorToWrite> Model::tensors() const {
  std::vector<TensorToWrite> out;
  visit_tensors(*this, [&](const std::string& name, const std::vector<std::int64_t>& shape,
                           const std::vector<float>& v, Init, std::int64_t) {
    out.push_back({name, shape, v.data()});
  });
  return out;
}

Status Model::save(const std::string& path) const {
  return write_safetensors(path, tensors(), {{"format", "pt"}, {"producer", "kvfleet"}});
}

kernels::KvLayout Model::kv_layout(std::int64_t block_tokens, DType kv_dtype) const {
  kernels::KvLayout l;
  l.num_layers = spec_.num_layers;
  l.num_kv_heads = spec_.num_kv_heads;
  l.head_dim = spec_.head_dim;
  l.block_tokens = block_tokens;
  l.dtype = kv_dtype;
  return l;
}

std::int64_t Model::parameter_count() const {
  std::int64_t n = 0;
  visit_tensors(
      *this, [&](const std::string&, const std::vector<std::int64_t>&, const std::vector<float>& v,
                 Init, std::int64_t) { n += static_cast<std::int64_t>(v.size()); });
  return n;
}

void Model::forward(std::span<const SeqChunk> chunks, const kernels::KvLayout& layout,
                    std::byte* kv_pool, Workspace& ws, std::vector<float>& logits_out) const {
  namespace k = kernels::cpu;
  const std::int64_t d = spec_.hidden_size, hd = spec_.head_dim;
  const std::int64_t nh = spec_.num_heads, nkv = spec_.num_kv_heads;
  const std::int64_t q_dim = nh * hd, kv_dim = nkv * hd, ffn = spec_.intermediate_size;
  const float eps = static_cast<float>(spec_.rms_norm_eps);
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));

  std::int64_t total = 0;
  for (const auto& c : chunks) total += static_cast<std::int64_t>(c.tokens.size());
  if (total == 0) return;
  auto sz = [](std::int64_t n) { return static_cast<size_t>(n); };
  ws.x.resize(sz(total * d));
  ws.h.resize(sz(total * d));
  ws.q.resize(sz(total * q_dim));
  ws.k.resize(sz(total * kv_dim));
  ws.v.resize(sz(total * kv_dim));
  ws.attn.resize(sz(total * q_dim));
  ws.gate.resize(sz(total * ffn));
  ws.up.resize(sz(total * ffn));
  ws.positions.resize(sz(total));

  std::int64_t t = 0;
  for (const auto& c : chunks) {
    KVFLEET_CHECK(static_cast<std::int64_t>(c.block_table.size()) >=
                  layout.blocks_for_tokens(c.pos0 + static_cast<std::int64_t>(c.tokens.size())));
    for (size_t i = 0; i < c.tokens.size(); ++i, ++t) {
      const std::int32_t tok = c.tokens[i];
      KVFLEET_CHECK(tok >= 0 && tok < spec_.vocab_size, "token id outside the vocabulary");
      std::copy_n(embed_.data() + tok * d, d, ws.x.data() + t * d);
      ws.positions[sz(t)] = c.pos0 + static_cast<std::int64_t>(i);
    }
  }

  for (std::int64_t l = 0; l < spec_.num_layers; ++l) {
    const Layer& L = layers_[sz(l)];
    k::rms_norm(ws.h.data(), ws.x.data(), L.attn_norm.data(), total, d, eps);
    k::linear(ws.q.data(), ws.h.data(), L.wq.data(), L.bq.empty() ? nullptr : L.bq.data(), total,
              q_dim, d);
    k::linear(ws.k.data(), ws.h.data(), L.wk.data(), L.bk.empty() ? nullptr : L.bk.data(), total,
              kv_dim, d);
    k::linear(ws.v.data(), ws.h.data(), L.wv.data(), L.bv.empty() ? nullptr : L.bv.data(), total,
              kv_dim, d);
    if (spec_.qk_norm) {
      k::rms_norm(ws.q.data(), ws.q.data(), L.q_norm.data(), total * nh, hd, eps);
      k::rms_norm(ws.k.data(), ws.k.data(), L.k_norm.data(), total * nkv, hd, eps);
    }
    rope_.apply(ws.q.data(), ws.positions, nh);
    rope_.apply(ws.k.data(), ws.positions, nkv);
    std::int64_t t0 = 0;
    for (const auto& c : chunks) {
      const auto n = static_cast<std::int64_t>(c.tokens.size());
      k::write_kv(layout, kv_pool, l, c.block_table, ws.k.data() + t0 * kv_dim,
                  ws.v.data() + t0 * kv_dim, n, c.pos0);
      k::paged_attention(layout, kv_pool, l, c.block_table, ws.q.data() + t0 * q_dim, n, c.pos0, nh,
                         scale, ws.attn.data() + t0 * q_dim, ws.attention);
      t0 += n;
    }
    k::linear(ws.h.data(), ws.attn.data(), L.wo.data(), nullptr, total, d, q_dim);
    k::add_inplace(ws.x.data(), ws.h.data(), total * d);
    k::rms_norm(ws.h.data(), ws.x.data(), L.mlp_norm.data(), total, d, eps);
    k::linear(ws.gate.data(), ws.h.data(), L.w_gate.data(), nullptr, total, ffn, d);
    k::linear(ws.up.data(), ws.h.data(), L.w_up.data(), nullptr, total, ffn, d);
    k::swiglu(ws.gate.data(), ws.gate.data(), ws.up.data(), total * ffn);
    k::linear(ws.h.data(), ws.gate.data(), L.w_down.data(), nullptr, total, d, ffn);
    k::add_inplace(ws.x.data(), ws.h.data(), total * d);
  }

  // Final norm and lm_head only for the rows whose logits are wanted.
  std::vector<std::int64_t> wanted;
  t = 0;
  for (const auto& c : chunks) {
    const auto n = static_cast<std::int64_t>(c.tokens.size());
    if (c.logits == LogitsWanted::kAll) {
      for (std::int64_t i = 0; i < n; ++i) wanted.push_back(t + i);
    } else if (c.logits == LogitsWanted::kLast) {
      wanted.push_back(t + n - 1);
    }
    t += n;
  }
  if (wanted.empty()) return;
  const auto rows = static_cast<std::int64_t>(wanted.size());
  ws.rows.resize(sz(rows * d));
  for (std::int64_t r = 0; r < rows; ++r) {
    k::rms_norm(ws.rows.data() + r * d, ws.x.data() + wanted[sz(r)] * d, final_norm_.data(), 1, d,
                eps);
  }
  const std::int64_t vocab = spec_.vocab_size;
  const size_t base = logits_out.size();
  logits_out.resize(base + sz(rows * vocab));
  const float* head = spec_.tie_word_embeddings ? embed_.data() : lm_head_.data();
  k::linear(logits_out.data() + base, ws.rows.data(), head, nullptr, rows, vocab, d);
}

}  // namespace kvfleet::worker

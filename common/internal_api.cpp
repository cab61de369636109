#include "common/internal_api.h"

#include <charconv>
#include <cstdio>
#include <limits>
#include <type_traits>

#include "common/cluster_secret.h"
#include "common/json_text.h"

namespace kvfleet::internal_api {
namespace {

std::string hex64(std::uint64_t x) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(x));
  return buf;
}

using nlohmann::json;

// Strict typed reads of one object's members; the first error is kept and names the field.
class Reader {
 public:
  explicit Reader(const json& j) : j_(j) {
    if (!j.is_object()) error_ = invalid_argument("expected a JSON object");
  }
  bool has(const char* k) const { return j_.is_object() && j_.contains(k) && !j_[k].is_null(); }

  template <typename T>
  void integer(const char* k, T& out, bool required = false) {
    if (!has(k)) {
      if (required) fail(k, "is required");
      return;
    }
    if (auto v = to_integer<T>(j_[k], k)) out = *v;
  }
  template <typename T>
  void integer(const char* k, std::optional<T>& out) {
    if (!has(k)) return;
    if (auto v = to_integer<T>(j_[k], k)) out = *v;
  }
  void number(const char* k, double& out, bool required = false) {
    if (!has(k)) {
      if (required) fail(k, "is required");
      return;
    }
    if (!j_[k].is_number()) return fail(k, "must be a number");
    out = j_[k].get<double>();
  }
  void boolean(const char* k, bool& out) {
    if (!has(k)) return;
    if (!j_[k].is_boolean()) return fail(k, "must be true or false");
    out = j_[k].get<bool>();
  }
  void string(const char* k, std::string& out, bool required = false) {
    if (!has(k)) {
      if (required) fail(k, "is required");
      return;
    }
    if (!j_[k].is_string()) return fail(k, "must be a string");
    out = j_[k].get<std::string>();
  }
  // An array of 64-bit values, each written as 16 hex digits (JSON numbers above 2^53 do not
  // survive every JSON library).
  void hex64s(const char* k, std::vector<std::uint64_t>& out) {
    if (!has(k)) return;
    if (!j_[k].is_array()) return fail(k, "must be an array of 16-hex-digit strings");
    out.clear();
    out.reserve(j_[k].size());
    for (const json& v : j_[k]) {
      const std::string* s = v.is_string() ? v.get_ptr<const std::string*>() : nullptr;
      std::uint64_t x = 0;
      if (!s || s->size() != 16 ||
          std::from_chars(s->data(), s->data() + 16, x, 16).ptr != s->data() + 16) {
        return fail(k, "must be an array of 16-hex-digit strings");
      }
      out.push_back(x);
    }
  }
  template <typename T>
  void integers(const char* k, std::vector<T>& out, bool required = false) {
    if (!has(k)) {
      if (required) fail(k, "is required (an array of integers)");
      return;
    }
    if (!j_[k].is_array()) return fail(k, "must be an array of integers");
    out.clear();
    out.reserve(j_[k].size());
    for (const json& v : j_[k]) {
      auto x = to_integer<T>(v, k);
      if (!x) return;
      out.push_back(*x);
    }
  }
  template <typename T, typename F>
  void object(const char* k, std::optional<T>& out, F decode) {
    if (!has(k)) return;
    auto r = decode(j_[k]);
    if (!r.is_ok()) {
      if (error_.is_ok()) error_ = r.status().with_context(std::string("field '") + k + "'");
      return;
    }
    out = std::move(r).value();
  }
  template <typename T, typename F>
  void object(const char* k, T& out, F decode) {
    std::optional<T> o;
    object(k, o, decode);
    if (o) out = std::move(*o);
  }
  // An array whose elements `each` decodes (an error names the field and the index).
  template <typename F>
  void list(const char* k, F each) {
    if (!has(k)) return;
    if (!j_[k].is_array()) return fail(k, "must be an array");
    for (size_t i = 0; i < j_[k].size() && error_.is_ok(); ++i) {
      Status st = each(j_[k][i]);
      if (!st.is_ok()) {
        error_ = st.with_context(std::string("field '") + k + "' [" + std::to_string(i) + "]");
      }
    }
  }
  const Status& status() const { return error_; }

 private:
  template <typename T>
  std::optional<T> to_integer(const json& v, const char* k) {
    static_assert(std::is_integral_v<T>);
    if (v.is_number_unsigned()) {
      const auto u = v.get<std::uint64_t>();
      if (u <= static_cast<std::uint64_t>(std::numeric_limits<T>::max())) return static_cast<T>(u);
    } else if (v.is_number_integer()) {
      const auto s = v.get<std::int64_t>();
      if constexpr (std::is_signed_v<T>) {
        if (s >= std::numeric_limits<T>::min() && s <= std::numeric_limits<T>::max())
          return static_cast<T>(s);
      }
    } else {
      fail(k, "must be an integer");
      return std::nullopt;
    }
    fail(k, std::string("is out of range (") + (std::is_signed_v<T> ? "signed " : "unsigned ") +
                std::to_string(sizeof(T) * 8) + "-bit)");
    return std::nullopt;
  }
  void fail(const char* k, const std::string& what) {
    if (error_.is_ok()) error_ = invalid_argument(std::string("field '") + k + "' " + what);
  }
  const json& j_;
  Status error_;
};

template <typename T>
Result<T> done(Reader& r, T value) {
  if (!r.status().is_ok()) return r.status();
  return value;
}

}  // namespace

Result<json> parse_object(std::string_view text, std::string_view what) {
  auto parsed = parse_json_text(text);
  if (!parsed.is_ok()) {
    return invalid_argument(std::string(what) +
                            ": the body is not valid JSON: " + parsed.status().message());
  }
  json j = std::move(parsed).value();
  if (!j.is_object())
    return invalid_argument(std::string(what) + ": the body is not a JSON object");
  return j;
}

// --- WorkerLoad ---------------------------------------------------------------------------------
json to_json(const WorkerLoad& m) {
  return json{{"running", m.running},           {"waiting", m.waiting},
              {"swapped", m.swapped},           {"free_blocks", m.free_blocks},
              {"total_blocks", m.total_blocks}, {"host_free_blocks", m.host_free_blocks},
              {"held_blocks", m.held_blocks},   {"prefix_hashes", m.prefix_hashes},
              {"step_seconds", m.step_seconds}};
}
Result<WorkerLoad> decode_WorkerLoad(const json& j) {
  Reader r(j);
  WorkerLoad m;
  r.integer("running", m.running);
  r.integer("waiting", m.waiting);
  r.integer("swapped", m.swapped);
  r.integer("free_blocks", m.free_blocks);
  r.integer("total_blocks", m.total_blocks);
  r.integer("host_free_blocks", m.host_free_blocks);
  r.integer("held_blocks", m.held_blocks);
  r.integers("prefix_hashes", m.prefix_hashes);
  r.number("step_seconds", m.step_seconds);
  for (auto [name, v] : {std::pair{"running", m.running}, std::pair{"waiting", m.waiting},
                         std::pair{"swapped", m.swapped}, std::pair{"free_blocks", m.free_blocks},
                         std::pair{"total_blocks", m.total_blocks},
                         std::pair{"host_free_blocks", m.host_free_blocks},
                         std::pair{"held_blocks", m.held_blocks}}) {
    if (v < 0 && r.status().is_ok())
      return invalid_argument(std::string("field '") + name + "' must be >= 0");
  }
  return done(r, std::move(m));
}

// --- Registration -------------------------------------------------------------------------------
json to_json(const Registration& m) {
  json j{{"worker_id", m.worker_id},
         {"url", m.url},
         {"role", m.role},
         {"model", m.model},
         {"max_model_len", m.max_model_len},
         {"vocab_size", m.vocab_size},
         {"kv_blocks", m.kv_blocks},
         {"block_tokens", m.block_tokens},
         {"block_bytes", m.block_bytes},
         {"transfer", m.transfer},
         {"backend", m.backend},
         {"backend_detail", m.backend_detail},
         {"prefix_hash_salt", m.prefix_hash_salt},
         {"pid", m.pid}};
  if (m.bos_token_id) j["bos_token_id"] = *m.bos_token_id;
  if (m.eos_token_id) j["eos_token_id"] = *m.eos_token_id;
  if (m.load) j["load"] = to_json(*m.load);
  if (!m.tokenizer_id.empty()) j["tokenizer_id"] = m.tokenizer_id;
  return j;
}
Result<Registration> decode_Registration(const json& j) {
  Reader r(j);
  Registration m;
  r.string("worker_id", m.worker_id, true);
  r.string("url", m.url, true);
  r.string("role", m.role, true);
  r.string("model", m.model, true);
  r.integer("max_model_len", m.max_model_len);
  r.integer("vocab_size", m.vocab_size, true);
  r.integer("bos_token_id", m.bos_token_id);
  r.integer("eos_token_id", m.eos_token_id);
  r.integer("kv_blocks", m.kv_blocks, true);
  r.integer("block_tokens", m.block_tokens, true);
  r.integer("block_bytes", m.block_bytes, true);
  r.string("transfer", m.transfer);
  r.string("backend", m.backend);
  r.string("backend_detail", m.backend_detail);
  r.integer("prefix_hash_salt", m.prefix_hash_salt);
  r.integer("pid", m.pid);
  r.string("tokenizer_id", m.tokenizer_id);
  r.object("load", m.load, decode_WorkerLoad);
  if (r.status().is_ok()) {
    if (m.worker_id.empty() || m.worker_id.size() > 256)
      return invalid_argument("field 'worker_id' must have 1 to 256 characters");
    if (m.vocab_size < 1) return invalid_argument("field 'vocab_size' must be >= 1");
    if (m.max_model_len < 0) return invalid_argument("field 'max_model_len' must be >= 0");
    if (m.kv_blocks < 0 || m.block_tokens < 1 || m.block_bytes < 0)
      return invalid_argument("fields 'kv_blocks', 'block_tokens', 'block_bytes' out of range");
    for (const auto& id : {m.bos_token_id, m.eos_token_id}) {
      if (id && (*id < -1 || *id >= m.vocab_size))
        return invalid_argument("special token ids must lie in the vocabulary");
    }
  }
  return done(r, std::move(m));
}

json to_json(const RegistrationReply& m) {
  return json{{"lease_seconds", m.lease_seconds}};
}
Result<RegistrationReply> decode_RegistrationReply(const json& j) {
  Reader r(j);
  RegistrationReply m;
  r.number("lease_seconds", m.lease_seconds);
  return done(r, m);
}

// --- Heartbeat / Deregistration -----------------------------------------------------------------
json to_json(const Heartbeat& m) {
  json j = to_json(m.load);
  j["worker_id"] = m.worker_id;
  return j;
}
Result<Heartbeat> decode_Heartbeat(const json& j) {
  Reader r(j);
  Heartbeat m;
  r.string("worker_id", m.worker_id, true);
  if (!r.status().is_ok()) return r.status();
  KVFLEET_ASSIGN_OR_RETURN(m.load, decode_WorkerLoad(j));
  return m;
}

json to_json(const Deregistration& m) {
  return json{{"worker_id", m.worker_id}};
}
Result<Deregistration> decode_Deregistration(const json& j) {
  Reader r(j);
  Deregistration m;
  r.string("worker_id", m.worker_id, true);
  return done(r, std::move(m));
}
json to_json(const DeregistrationReply& m) {
  return json{{"removed", m.removed}};
}
Result<DeregistrationReply> decode_DeregistrationReply(const json& j) {
  Reader r(j);
  DeregistrationReply m;
  r.boolean("removed", m.removed);
  return done(r, m);
}

// --- KvHandoff ----------------------------------------------------------------------------------
std::string KvHandoff::signed_text() const {
  // Length-prefixed fields: no two different hand-offs share these bytes.
  std::string s = "kvfleet-kv-handoff-v2";
  auto field = [&](std::string_view v) {
    s += '\n';
    s += std::to_string(v.size());
    s += ':';
    s += v;
  };
  field(agent);
  field(address);
  field(region);
  field(modelled ? "1" : "0");
  std::string b;
  for (std::int32_t x : blocks) b += std::to_string(x) + ",";
  field(b);
  field(std::to_string(block_bytes));
  field(std::to_string(tokens));
  field(lease);
  field(worker_url);
  std::string c;
  for (std::uint64_t x : checksums) c += hex64(x) + ",";
  field(c);
  return s;
}
void KvHandoff::sign(const ClusterSecret& secret) {
  mac = secret.mac(signed_text());
}
Status KvHandoff::verify(const ClusterSecret* secret) const {
  if (!secret) return Status::ok();
  if (mac.empty()) return Status(StatusCode::kPermissionDenied, "the KV hand-off is not signed");
  if (!secret->verify(signed_text(), mac)) {
    return Status(StatusCode::kPermissionDenied,
                  "the KV hand-off's signature does not match its fields (forged or altered; "
                  "only this cluster's workers can describe KV)");
  }
  return Status::ok();
}

json to_json(const KvHandoff& m) {
  json j{{"agent", m.agent},   {"blocks", m.blocks}, {"block_bytes", m.block_bytes},
         {"tokens", m.tokens}, {"lease", m.lease},   {"worker_url", m.worker_url}};
  if (m.modelled) {
    j["modelled"] = true;
  } else {
    j["address"] = m.address;
    j["region"] = m.region;
  }
  if (!m.checksums.empty()) {
    json c = json::array();
    for (std::uint64_t x : m.checksums) c.push_back(hex64(x));
    j["checksums"] = std::move(c);
  }
  if (!m.mac.empty()) j["mac"] = m.mac;
  return j;
}
Result<KvHandoff> decode_KvHandoff(const json& j) {
  Reader r(j);
  KvHandoff m;
  r.string("agent", m.agent);
  r.string("address", m.address);
  r.string("region", m.region);
  r.boolean("modelled", m.modelled);
  r.integers("blocks", m.blocks, true);
  r.integer("block_bytes", m.block_bytes);
  r.integer("tokens", m.tokens);
  r.string("lease", m.lease);
  r.string("worker_url", m.worker_url);
  r.hex64s("checksums", m.checksums);
  r.string("mac", m.mac);
  if (r.status().is_ok()) {
    for (std::int32_t b : m.blocks)
      if (b < 0) return invalid_argument("field 'blocks' holds a negative block id");
    if (!m.checksums.empty() && m.checksums.size() != m.blocks.size()) {
      return invalid_argument("field 'checksums' must hold one checksum per block");
    }
  }
  return done(r, std::move(m));
}

// --- SamplingParams / GenerateRequest -----------------------------------------------------------
json to_json(const SamplingParams& m) {
  json j{{"max_tokens", m.max_tokens},
         {"min_tokens", m.min_tokens},
         {"temperature", m.temperature},
         {"top_p", m.top_p},
         {"top_k", m.top_k},
         {"ignore_eos", m.ignore_eos},
         {"stop_token_ids", m.stop_token_ids},
         {"presence_penalty", m.presence_penalty},
         {"frequency_penalty", m.frequency_penalty},
         {"repetition_penalty", m.repetition_penalty}};
  if (m.seed) j["seed"] = *m.seed;
  if (!m.logit_bias.empty()) {
    json bias = json::array();
    for (const auto& [token, b] : m.logit_bias) bias.push_back({{"token", token}, {"bias", b}});
    j["logit_bias"] = bias;
  }
  if (m.logprobs) j["logprobs"] = *m.logprobs;
  return j;
}
Result<SamplingParams> decode_SamplingParams(const json& j) {
  Reader r(j);
  SamplingParams m;
  r.integer("max_tokens", m.max_tokens);
  r.integer("min_tokens", m.min_tokens);
  r.number("temperature", m.temperature);
  r.number("top_p", m.top_p);
  r.integer("top_k", m.top_k);
  r.integer("seed", m.seed);
  r.boolean("ignore_eos", m.ignore_eos);
  r.integers("stop_token_ids", m.stop_token_ids);
  r.number("presence_penalty", m.presence_penalty);
  r.number("frequency_penalty", m.frequency_penalty);
  r.number("repetition_penalty", m.repetition_penalty);
  r.integer("logprobs", m.logprobs);
  r.list("logit_bias", [&](const json& e) -> Status {
    Reader er(e);
    std::pair<std::int32_t, double> b;
    er.integer("token", b.first, true);
    er.number("bias", b.second, true);
    if (er.status().is_ok()) m.logit_bias.push_back(b);
    return er.status();
  });
  return done(r, std::move(m));
}

json to_json(const GenerateRequest& m) {
  json j{{"tokens", m.tokens}, {"mode", m.mode}, {"params", to_json(m.params)}};
  if (m.prompt_len) j["prompt_len"] = *m.prompt_len;
  if (m.kv) j["kv"] = to_json(*m.kv);
  return j;
}
Result<GenerateRequest> decode_GenerateRequest(const json& j) {
  Reader r(j);
  GenerateRequest m;
  r.integers("tokens", m.tokens, true);
  r.integer("prompt_len", m.prompt_len);
  r.string("mode", m.mode);
  r.object("params", m.params, decode_SamplingParams);
  r.object("kv", m.kv, decode_KvHandoff);
  return done(r, std::move(m));
}

// --- stream lines -------------------------------------------------------------------------------
json to_json(const RunTimings& m) {
  return json{{"queue_seconds", m.queue_seconds},
              {"prefill_seconds", m.prefill_seconds},
              {"time_to_first_token", m.time_to_first_token},
              {"inter_token_seconds_sum", m.inter_token_seconds_sum},
              {"prompt_tokens", m.prompt_tokens},
              {"generated_tokens", m.generated_tokens},
              {"prefix_hit_tokens", m.prefix_hit_tokens},
              {"swap_out_count", m.swap_out_count},
              {"swap_in_count", m.swap_in_count},
              {"swap_out_seconds", m.swap_out_seconds},
              {"swap_in_seconds", m.swap_in_seconds},
              {"recompute_preemptions", m.recompute_preemptions}};
}
Result<RunTimings> decode_RunTimings(const json& j) {
  Reader r(j);
  RunTimings m;
  r.number("queue_seconds", m.queue_seconds);
  r.number("prefill_seconds", m.prefill_seconds);
  r.number("time_to_first_token", m.time_to_first_token);
  r.number("inter_token_seconds_sum", m.inter_token_seconds_sum);
  r.integer("prompt_tokens", m.prompt_tokens);
  r.integer("generated_tokens", m.generated_tokens);
  r.integer("prefix_hit_tokens", m.prefix_hit_tokens);
  r.integer("swap_out_count", m.swap_out_count);
  r.integer("swap_in_count", m.swap_in_count);
  r.number("swap_out_seconds", m.swap_out_seconds);
  r.number("swap_in_seconds", m.swap_in_seconds);
  r.integer("recompute_preemptions", m.recompute_preemptions);
  return done(r, m);
}

json to_json(const TokenLine& m) {
  json j{{"token", m.token}};
  if (m.logprob) {
    j["logprob"] = *m.logprob;
    json top = json::array();
    for (const TopLogprob& t : m.top) top.push_back({{"token", t.token}, {"logprob", t.logprob}});
    j["top"] = top;
  }
  return j;
}
Result<TokenLine> decode_TokenLine(const json& j) {
  Reader r(j);
  TokenLine m;
  r.integer("token", m.token, true);
  if (r.has("logprob")) {
    double lp = 0;
    r.number("logprob", lp, true);
    m.logprob = lp;
  }
  r.list("top", [&](const json& e) -> Status {
    Reader er(e);
    TopLogprob t;
    er.integer("token", t.token, true);
    er.number("logprob", t.logprob, true);
    if (er.status().is_ok()) m.top.push_back(t);
    return er.status();
  });
  return done(r, std::move(m));
}

json to_json(const AliveLine& m) {
  return json{{"alive", m.alive}};
}
Result<AliveLine> decode_AliveLine(const json& j) {
  Reader r(j);
  AliveLine m;
  r.boolean("alive", m.alive);
  return done(r, m);
}

json to_json(const KvTransferLine& m) {
  return json{
      {"kv_transfer", {{"seconds", m.seconds}, {"bytes", m.bytes}, {"operations", m.operations}}}};
}
Result<KvTransferLine> decode_KvTransferLine(const json& j) {
  if (!j.is_object() || !j.contains("kv_transfer")) return invalid_argument("expected kv_transfer");
  Reader r(j["kv_transfer"]);
  KvTransferLine m;
  r.number("seconds", m.seconds);
  r.integer("bytes", m.bytes);
  r.integer("operations", m.operations);
  return done(r, m);
}

json to_json(const FinishLine& m) {
  json j{{"finish", m.finish}, {"timings", to_json(m.timings)}, {"worker_id", m.worker_id}};
  if (!m.error.empty()) j["error"] = m.error;
  if (m.kv) j["kv"] = to_json(*m.kv);
  return j;
}
Result<FinishLine> decode_FinishLine(const json& j) {
  Reader r(j);
  FinishLine m;
  r.string("finish", m.finish, true);
  r.string("error", m.error);
  r.string("worker_id", m.worker_id);
  r.object("timings", m.timings, decode_RunTimings);
  r.object("kv", m.kv, decode_KvHandoff);
  return done(r, std::move(m));
}

json to_json(const Release& m) {
  return json{{"lease", m.lease}};
}
Result<Release> decode_Release(const json& j) {
  Reader r(j);
  Release m;
  r.string("lease", m.lease, true);
  return done(r, std::move(m));
}
json to_json(const ReleaseReply& m) {
  return json{{"released", m.released}};
}
Result<ReleaseReply> decode_ReleaseReply(const json& j) {
  Reader r(j);
  ReleaseReply m;
  r.boolean("released", m.released);
  return done(r, m);
}

#define KVFLEET_ENCODE(T)                                                   \
  std::string encode(const T& m) {                                          \
    return to_json(m).dump(-1, ' ', false, json::error_handler_t::replace); \
  }
KVFLEET_ENCODE(WorkerLoad)
KVFLEET_ENCODE(Registration)
KVFLEET_ENCODE(RegistrationReply)
KVFLEET_ENCODE(Heartbeat)
KVFLEET_ENCODE(Deregistration)
KVFLEET_ENCODE(DeregistrationReply)
KVFLEET_ENCODE(KvHandoff)
KVFLEET_ENCODE(SamplingParams)
KVFLEET_ENCODE(GenerateRequest)
KVFLEET_ENCODE(RunTimings)
KVFLEET_ENCODE(TokenLine)
KVFLEET_ENCODE(AliveLine)
KVFLEET_ENCODE(KvTransferLine)
KVFLEET_ENCODE(FinishLine)
KVFLEET_ENCODE(Release)
KVFLEET_ENCODE(ReleaseReply)
#undef KVFLEET_ENCODE

}  // namespace kvfleet::internal_api

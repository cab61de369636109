#pragma once
// The `sim` engine backend: any model the analytical model knows (built-in names or a Hugging
// Face config.json, MoE and MLA included) on any hardware spec (built-in, a file, or a profile
// from `kvfleet bench engine --profile`), with tensor parallelism. It holds no weights and
// computes nothing; the engine above it (scheduler, block pool, host store) is the production
// one. Each step lasts what perfmodel's StepModel predicts for exactly that batch (its prefill
// chunks and decode tokens with their context lengths), a swap lasts bytes / PCIe bandwidth, and
// a KV hand-off bytes / link bandwidth plus the link's latency (handoff_seconds). Durations are
// waited on the engine's clock: in wall time scaled by `time_scale` (0.1 runs ten times faster
// than the modelled hardware), or on a virtual clock (`kvfleet simulate`), where they just
// advance time. In wall time, consecutive waits chain on absolute deadlines, so the engine's own
// CPU work between steps and sleep overshoot do not stretch the modelled device time (a device
// running ahead of its host); an idle gap restarts the chain.
//
// Geometry: KV blocks of `block_tokens` tokens with the per-device KV of the model at the TP
// degree (KV heads split over ranks, MLA's latent replicated), in the KV dtype (default: the
// model's dtype, as `kvfleet plan`). The block count is what HBM holds after the weights, exactly
// as `kvfleet plan` computes concurrency; a model that does not fit is an error naming the
// smallest TP degree that does.
//
// Tokens: pseudo-random but deterministic. The token after position p is a hash of (seed, p, the
// token at p) and, when sampling (temperature > 0), the request's counter-based draw for that
// output token (sampler.h): the same prompt gives the same continuation, prefixes share blocks
// as with a real model, and a re-run from the first k tokens continues exactly. Tokens are drawn
// from printable ASCII (bytes 32..126) so byte-level tokenizers render them as text; EOS is
// never drawn (requests end at max_tokens or a stop token id), as benchmarks run with
// ignore_eos.
//
// Registered as "sim" (worker/CMakeLists.txt); created with create_backend("sim", options),
// where BackendOptions::hardware, tp, link, time_scale and clock configure it.

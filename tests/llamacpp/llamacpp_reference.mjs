// llama.cpp as the reference for kvfleet's model (tests/hfmodel/llamacpp_reference_test.cpp):
// the prebuilt CPU build of node-llama-cpp (pinned in package.json) loads a GGUF file that
// `kvfleet export --gguf` wrote and runs it on given token ids.
//
//   node llamacpp_reference.mjs MODEL.gguf REQUEST.json LOGPROBS.bin
//     REQUEST.json: {"prompt": [ids], "max_tokens": N, "texts": ["...", ...]}
//     Feeds the prompt ids as they are (no BOS added, no tokenization), then generates N >= 1
//     tokens greedily (llama.cpp's greedy sampler, temperature 0, one decode step per token).
//     Then evaluates the prompt and the generated tokens but the last again in one batch, and
//     writes to LOGPROBS.bin the log-softmax of the logits after each of them (float32, vocab
//     values per row): prompt + N - 1 rows, row i predicting token i + 1.
//     Prints JSON: {"tokens": [N generated ids], "rows", "vocab", "tokenized": [ids of each of
//     `texts` by llama.cpp's tokenizer, special tokens parsed, no BOS], "metadata": {...}}.
//
// fp32 throughout: F32 weights in the file, F32 KV cache, flash attention off (ggml's CPU flash
// attention rounds Q to F16). One thread unless KVFLEET_LLAMACPP_THREADS says otherwise: on a
// small model a busy 2-core machine runs llama.cpp's thread pool slower than one thread.
// KVFLEET_LLAMACPP_TIMES=1 prints the time of each phase on stderr.
import { readFileSync, writeFileSync } from "node:fs";
import { getLlama, LlamaLogLevel } from "node-llama-cpp";

const [modelPath, requestPath, logprobsPath] = process.argv.slice(2);
if (!logprobsPath) {
  console.error("usage: llamacpp_reference.mjs MODEL.gguf REQUEST.json LOGPROBS.bin");
  process.exit(2);
}
const t0 = Date.now();
const lap = (what) => {
  if (process.env.KVFLEET_LLAMACPP_TIMES) console.error(what, Date.now() - t0, "ms");
};
const request = JSON.parse(readFileSync(requestPath, "utf8"));
const prompt = request.prompt;
const maxTokens = request.max_tokens;

// The prebuilt binary only: never build llama.cpp from source, never download anything.
const llama = await getLlama({
  gpu: false,
  build: "never",
  usePrebuiltBinaries: true,
  progressLogs: false,
  logLevel: LlamaLogLevel.error,
});
const model = await llama.loadModel({ modelPath, gpuLayers: 0 });
const contextSize = Math.max(64, prompt.length + maxTokens + 8);
const context = await model.createContext({
  contextSize,
  batchSize: contextSize,
  threads: Number(process.env.KVFLEET_LLAMACPP_THREADS ?? 1),
  sequences: 1,
  flashAttention: false,
  experimentalKvCacheKeyType: "F32",
  experimentalKvCacheValueType: "F32",
});
const sequence = context.getSequence();
lap("loaded");

// Greedy generation as llama.cpp runs it: the prompt in one batch, then one token per step.
const generated = [];
if (maxTokens > 0) {
  for await (const token of sequence.evaluate(prompt, { temperature: 0 })) {
    generated.push(token);
    if (generated.length === maxTokens) break;
  }
}
lap("generated");
// Then the distributions: prompt and generated tokens again, in one batch, every position's
// probabilities requested (node-llama-cpp gives the softmax of the logits, not the logits).
await sequence.clearHistory();
const fed = prompt.concat(generated.slice(0, -1));
const next = { generateNext: { probabilities: true } };
const out = await sequence.controlledEvaluate(fed.map((t) => [t, next]));
lap("distributions");
const rows = [];
let vocab = 0; // the size of the first distribution; every row must have it
for (let i = 0; i < out.length; ++i) {
  const probabilities = out[i]?.next?.probabilities;
  if (!probabilities) throw new Error(`no probabilities for input ${i}`);
  vocab ||= probabilities.size;
  if (probabilities.size !== vocab) {
    throw new Error(`${probabilities.size} probabilities, not ${vocab}`);
  }
  const row = new Float32Array(vocab).fill(-Infinity);
  for (const [token, p] of probabilities) row[token] = Math.log(p);
  rows.push(row);
}

const bytes = Buffer.alloc(rows.length * vocab * 4);
rows.forEach((row, i) => Buffer.from(row.buffer).copy(bytes, i * vocab * 4));
writeFileSync(logprobsPath, bytes);

const tokenized = (request.texts ?? []).map((text) => Array.from(model.tokenize(text, true)));
lap("tokenized");
const md = model.fileInfo.metadata;
const arch = md.general.architecture;
console.log(
  JSON.stringify({
    tokens: generated,
    rows: rows.length,
    vocab,
    tokenized,
    metadata: {
      architecture: arch,
      tokenizer_model: md.tokenizer?.ggml?.model,
      pre_tokenizer: md.tokenizer?.ggml?.pre ?? "",
      block_count: md[arch]?.block_count,
      llama_cpp: llama.llamaCppRelease.release,
    },
  }),
);
await context.dispose();
await model.dispose();
await llama.dispose();

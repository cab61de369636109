// Reference tokenizations for the C++ tokenizer tests (tests/tokenizer/) and benchmark, from
// @huggingface/tokenizers (pinned in package.json).
//
//   node tokenizer_reference.mjs encode MODEL_DIR CORPUS.json OUT.json
//     CORPUS.json: a JSON array of strings. OUT.json gets, per string, the ids with and without
//     special tokens and the decodes of the ids (with and without skip_special_tokens).
//   node tokenizer_reference.mjs bench MODEL_DIR LINES.json REPEATS
//     LINES.json: a JSON array of strings. Prints {"bytes", "tokens", "seconds"}: the best of
//     REPEATS timed passes (after one warm-up) encoding each string, as a server sees prompts.
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { Tokenizer } from "@huggingface/tokenizers";

const [mode, modelDir, input, output] = process.argv.slice(2);
const tokenizerJson = JSON.parse(readFileSync(join(modelDir, "tokenizer.json"), "utf8"));
let tokenizerConfig = {};
try {
  tokenizerConfig = JSON.parse(readFileSync(join(modelDir, "tokenizer_config.json"), "utf8"));
} catch {
  // no tokenizer_config.json: the defaults
}
const tokenizer = new Tokenizer(tokenizerJson, tokenizerConfig);
const decode = (ids, skip) =>
  ids.length === 0 ? "" : tokenizer.decode(ids, { skip_special_tokens: skip });

if (mode === "encode") {
  const corpus = JSON.parse(readFileSync(input, "utf8"));
  const result = { ids: [], ids_plain: [], decoded: [], decoded_skip: [] };
  for (const text of corpus) {
    const ids = tokenizer.encode(text, { add_special_tokens: true }).ids;
    const plain = tokenizer.encode(text, { add_special_tokens: false }).ids;
    result.ids.push(ids);
    result.ids_plain.push(plain);
    result.decoded.push(decode(plain, false));
    result.decoded_skip.push(decode(ids, true));
  }
  writeFileSync(output, JSON.stringify(result));
} else if (mode === "bench") {
  const lines = JSON.parse(readFileSync(input, "utf8"));
  const repeats = Number(output ?? 3);
  let bytes = 0;
  for (const line of lines) bytes += Buffer.byteLength(line, "utf8");
  let tokens = 0;
  for (const line of lines) tokens += tokenizer.encode(line, { add_special_tokens: false }).ids.length;
  let best = Infinity;
  for (let r = 0; r < repeats; ++r) {
    const start = process.hrtime.bigint();
    for (const line of lines) tokenizer.encode(line, { add_special_tokens: false });
    const seconds = Number(process.hrtime.bigint() - start) / 1e9;
    best = Math.min(best, seconds);
  }
  console.log(JSON.stringify({ bytes, tokens, seconds: best }));
} else {
  console.error("usage: tokenizer_reference.mjs encode|bench MODEL_DIR INPUT OUTPUT|REPEATS");
  process.exit(2);
}

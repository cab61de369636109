// Drives a kvfleet cluster serving a Hugging Face model folder with the official `openai` npm
// package: completions and chat completions, streamed and whole, greedy. The text must round-trip
// through the folder's tokenizer (@huggingface/tokenizers, the reference): encoding the returned
// text and decoding it gives it back, and streamed text equals the whole response's text.
//   node openai_client_hf.mjs http://HOST:PORT MODEL_DIR
import { readFileSync } from "node:fs";
import { join } from "node:path";
import OpenAI from "openai";
import { Tokenizer } from "@huggingface/tokenizers";

const [base, modelDir] = process.argv.slice(2);
if (!base || !modelDir) {
  console.error("usage: node openai_client_hf.mjs http://HOST:PORT MODEL_DIR");
  process.exit(2);
}
const fail = (msg) => {
  console.error(`FAIL: ${msg}`);
  process.exit(1);
};
const tokenizer = new Tokenizer(
  JSON.parse(readFileSync(join(modelDir, "tokenizer.json"), "utf8")),
  JSON.parse(readFileSync(join(modelDir, "tokenizer_config.json"), "utf8")),
);
const roundTrips = (text, what) => {
  const ids = tokenizer.encode(text, { add_special_tokens: false }).ids;
  const back = ids.length ? tokenizer.decode(ids, { skip_special_tokens: false }) : "";
  if (back !== text) fail(`${what}: ${JSON.stringify(text)} decodes back as ${JSON.stringify(back)}`);
  if (text.includes("\uFFFD")) console.log(`note: ${what} holds U+FFFD (random weights)`);
};

const client = new OpenAI({ baseURL: `${base}/v1`, apiKey: "not-needed", maxRetries: 0 });
const model = modelDir.replace(/\/+$/, "");
const ids = [];
for await (const m of await client.models.list()) ids.push(m.id);
if (!ids.includes(model)) fail(`models: ${JSON.stringify(ids)} lacks ${model}`);

const n = 16;
const params = { model, prompt: "The capital of France is", max_tokens: n, temperature: 0, ignore_eos: true };
const whole = await client.completions.create(params);
const text = whole.choices[0].text;
if (typeof text !== "string" || text.length === 0) fail(`completion text ${JSON.stringify(text)}`);
if (whole.usage.completion_tokens !== n) fail(`usage ${JSON.stringify(whole.usage)}`);
const promptIds = tokenizer.encode(params.prompt, { add_special_tokens: true }).ids;
if (whole.usage.prompt_tokens !== promptIds.length) {
  fail(`prompt_tokens ${whole.usage.prompt_tokens}, the tokenizer gives ${promptIds.length}`);
}
roundTrips(text, "completion");

let streamed = "";
for await (const chunk of await client.completions.create({ ...params, stream: true })) {
  if (chunk.choices.length) {
    const piece = chunk.choices[0].text;
    // No event splits a UTF-8 character: a piece never ends in a lone high surrogate either.
    if (/[\uD800-\uDBFF]$/.test(piece)) fail(`a streamed piece splits a character: ${JSON.stringify(piece)}`);
    streamed += piece;
  }
}
if (streamed !== text) fail(`streamed ${JSON.stringify(streamed)} != ${JSON.stringify(text)}`);

const messages = [{ role: "system", content: "You are terse." }, { role: "user", content: "Name a colour." }];
const chatParams = { model, messages, max_tokens: n, temperature: 0, ignore_eos: true };
const chat = await client.chat.completions.create(chatParams);
const chatText = chat.choices[0].message.content;
if (chat.choices[0].message.role !== "assistant") fail(`chat role ${chat.choices[0].message.role}`);
if (typeof chatText !== "string" || chatText.length === 0) fail(`chat text ${JSON.stringify(chatText)}`);
roundTrips(chatText, "chat");
let chatStreamed = "";
for await (const chunk of await client.chat.completions.create({ ...chatParams, stream: true })) {
  chatStreamed += chunk.choices[0]?.delta?.content ?? "";
}
if (chatStreamed !== chatText) fail(`chat stream ${JSON.stringify(chatStreamed)} != ${JSON.stringify(chatText)}`);

// An unknown chat role is a 400.
try {
  await client.chat.completions.create({ ...chatParams, messages: [{ role: "wizard", content: "hi" }] });
  fail("an unknown role was accepted");
} catch (e) {
  if (!(e instanceof OpenAI.BadRequestError)) fail(`unknown role: ${e}`);
}
console.log(`ok: completion ${JSON.stringify(text)}, chat ${JSON.stringify(chatText)}`);

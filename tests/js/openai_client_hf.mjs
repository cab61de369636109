// Drives a kvfleet cluster serving a Hugging Face model folder with the official `openai` npm
// package: completions and chat completions, streamed and whole, greedy. The text must round-trip
// through the folder's tokenizer (@huggingface/tokenizers, the reference): encoding the returned
// text and decoding it gives it back, and streamed text equals the whole response's text. Chat
// logprobs with n = 2: each token's `bytes` are the tokenizer's own for its id and its `token` is
// their text, the bytes of a choice decode to the choice's text, and each streamed choice (its
// own incremental decoder) gives the same text as the whole response.
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

// Chat logprobs and n = 2 (seeded, so the streamed choices are the same as the whole ones).
const utf8 = new TextDecoder("utf-8", { fatal: false });
const lpParams = {
  ...chatParams, n: 2, temperature: 1, seed: 7, logprobs: true, top_logprobs: 2, return_token_ids: true,
};
const lpChat = await client.chat.completions.create(lpParams);
if (lpChat.choices.length !== 2) fail(`n=2 gave ${lpChat.choices.length} choices`);
let lpTokens = 0;
const lpTexts = [];
for (const [i, c] of lpChat.choices.entries()) {
  if (c.index !== i) fail(`choice ${i} has index ${c.index}`);
  const content = c.logprobs?.content;
  const tokenIds = c.token_ids;
  if (!Array.isArray(content) || !Array.isArray(tokenIds) || content.length !== tokenIds.length) {
    fail(`choice ${i}: logprobs ${JSON.stringify(c.logprobs)} for ids ${JSON.stringify(tokenIds)}`);
  }
  lpTokens += content.length;
  const bytes = [];
  for (const [k, e] of content.entries()) {
    const id = tokenIds[k];
    const piece = Buffer.from(e.bytes);
    // The real tokenizer's text of the token alone; a part of a character shows as U+FFFD.
    const alone = tokenizer.decode([id], { skip_special_tokens: false });
    if (!alone.includes("\uFFFD") && piece.toString("utf8") !== alone) {
      fail(`choice ${i} token ${k} (id ${id}): bytes ${JSON.stringify(e.bytes)} are not ${JSON.stringify(alone)}`);
    }
    if (e.token !== utf8.decode(piece)) fail(`choice ${i} token ${k}: token ${JSON.stringify(e.token)} is not its bytes' text`);
    if (!(e.logprob <= 0) || e.top_logprobs.length !== 2) fail(`choice ${i} token ${k}: ${JSON.stringify(e)}`);
    if (e.top_logprobs[0].logprob < e.top_logprobs[1].logprob) fail(`top_logprobs not best first: ${JSON.stringify(e)}`);
    // The content leaves special tokens out, as vLLM's does.
    const special = tokenizer.decode([id], { skip_special_tokens: true }) === "" && alone !== "";
    if (!special) bytes.push(...e.bytes);
  }
  const fromBytes = utf8.decode(Buffer.from(bytes));
  if (fromBytes !== c.message.content) {
    fail(`choice ${i}: its bytes give ${JSON.stringify(fromBytes)}, its text is ${JSON.stringify(c.message.content)}`);
  }
  const reference = tokenizer.decode(tokenIds, { skip_special_tokens: true });
  if (reference !== c.message.content) {
    fail(`choice ${i}: ${JSON.stringify(c.message.content)}, the tokenizer decodes ${JSON.stringify(reference)}`);
  }
  lpTexts.push(c.message.content);
}
if (lpChat.usage.completion_tokens !== lpTokens) fail(`n=2 usage ${JSON.stringify(lpChat.usage)}, ${lpTokens} tokens`);
if (lpTexts[0] === lpTexts[1]) fail(`the two choices are the same: ${JSON.stringify(lpTexts[0])}`);
const lpStreamed = ["", ""];
for await (const chunk of await client.chat.completions.create({ ...lpParams, stream: true })) {
  for (const c of chunk.choices) {
    const piece = c.delta?.content ?? "";
    if (/[\uD800-\uDBFF]$/.test(piece)) fail(`a streamed piece splits a character: ${JSON.stringify(piece)}`);
    lpStreamed[c.index] += piece;
  }
}
for (const i of [0, 1]) {
  if (lpStreamed[i] !== lpTexts[i]) fail(`streamed choice ${i} ${JSON.stringify(lpStreamed[i])} != ${JSON.stringify(lpTexts[i])}`);
}

// An unknown chat role is a 400.
try {
  await client.chat.completions.create({ ...chatParams, messages: [{ role: "wizard", content: "hi" }] });
  fail("an unknown role was accepted");
} catch (e) {
  if (!(e instanceof OpenAI.BadRequestError)) fail(`unknown role: ${e}`);
}
console.log(`ok: completion ${JSON.stringify(text)}, chat ${JSON.stringify(chatText)}, n=2 with logprobs ${JSON.stringify(lpTexts)}`);

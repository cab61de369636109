// Drives a kvfleet coordinator with the official `openai` npm package, unchanged: a streamed
// and a whole completion, a streamed and a whole chat completion, and the model list. Exits
// non-zero (with the reason) when anything differs from what the API promises.
import OpenAI from "openai";

const base = process.argv[2];
if (!base) {
  console.error("usage: node openai_client.mjs http://HOST:PORT");
  process.exit(2);
}
const client = new OpenAI({ baseURL: `${base}/v1`, apiKey: "not-needed", maxRetries: 0 });
const fail = (msg) => {
  console.error(`FAIL: ${msg}`);
  process.exit(1);
};

const models = await client.models.list();
const ids = [];
for await (const m of models) ids.push(m.id);
if (!ids.includes("tiny")) fail(`models: ${JSON.stringify(ids)}`);

const params = { model: "tiny", prompt: "kvfleet serves long contexts", max_tokens: 12, temperature: 0, ignore_eos: true };
const whole = await client.completions.create(params);
if (whole.choices[0].finish_reason !== "length") fail(`finish_reason ${whole.choices[0].finish_reason}`);
if (whole.usage.completion_tokens !== 12) fail(`usage ${JSON.stringify(whole.usage)}`);

let streamed = "";
let chunks = 0;
let usage = null;
const stream = await client.completions.create({ ...params, stream: true, stream_options: { include_usage: true } });
for await (const chunk of stream) {
  chunks += 1;
  if (chunk.usage) usage = chunk.usage;
  if (chunk.choices.length) streamed += chunk.choices[0].text;
}
if (streamed !== whole.choices[0].text) fail(`streamed ${JSON.stringify(streamed)} != ${JSON.stringify(whole.choices[0].text)}`);
if (!usage || usage.completion_tokens !== 12) fail(`stream usage ${JSON.stringify(usage)}`);
if (chunks !== 12 + 2) fail(`expected 14 chunks (12 tokens, finish, usage), got ${chunks}`);

const chatParams = { model: "tiny", messages: [{ role: "user", content: "hello" }], max_tokens: 6, temperature: 0, ignore_eos: true };
const chat = await client.chat.completions.create(chatParams);
if (chat.choices[0].message.role !== "assistant") fail(`chat role ${chat.choices[0].message.role}`);
let chatText = "";
let role = null;
const chatStream = await client.chat.completions.create({ ...chatParams, stream: true });
for await (const chunk of chatStream) {
  const d = chunk.choices[0]?.delta ?? {};
  if (d.role) role = d.role;
  chatText += d.content ?? "";
}
if (role !== "assistant") fail(`chat stream role ${role}`);
if (chatText !== chat.choices[0].message.content) fail(`chat stream ${JSON.stringify(chatText)} != ${JSON.stringify(chat.choices[0].message.content)}`);

// logprobs (completions: an integer; chat: logprobs + top_logprobs) and n = 2.
const lp = await client.completions.create({ ...params, max_tokens: 4, logprobs: 2 });
const l = lp.choices[0].logprobs;
if (!l || l.tokens.length !== 4 || l.token_logprobs.length !== 4 || l.top_logprobs.length !== 4) fail(`completion logprobs ${JSON.stringify(l)}`);
if (l.tokens.join("") !== lp.choices[0].text) fail(`logprob tokens ${JSON.stringify(l.tokens)} != text ${JSON.stringify(lp.choices[0].text)}`);
if (!l.token_logprobs.every((x) => x <= 0)) fail(`token_logprobs ${JSON.stringify(l.token_logprobs)}`);
const chatLp = await client.chat.completions.create({ ...chatParams, max_tokens: 3, logprobs: true, top_logprobs: 2 });
const content = chatLp.choices[0].logprobs?.content ?? [];
if (content.length !== 3 || !content.every((c) => Array.isArray(c.bytes) && c.top_logprobs.length === 2)) fail(`chat logprobs ${JSON.stringify(chatLp.choices[0].logprobs)}`);
const two = await client.completions.create({ ...params, max_tokens: 5, n: 2, temperature: 1, seed: 11 });
if (two.choices.length !== 2 || two.choices[0].index !== 0 || two.choices[1].index !== 1) fail(`n=2 choices ${JSON.stringify(two.choices)}`);
if (two.usage.completion_tokens !== 10) fail(`n=2 usage ${JSON.stringify(two.usage)}`);
const twoChat = await client.chat.completions.create({ ...chatParams, max_tokens: 3, n: 2, temperature: 1, seed: 11, stream: true });
const seen = new Set();
for await (const chunk of twoChat) for (const c of chunk.choices) if (c.finish_reason) seen.add(c.index);
if (seen.size !== 2) fail(`n=2 chat stream finished choices ${JSON.stringify([...seen])}`);
if (!chatLp.system_fingerprint) fail("no system_fingerprint");
const one = await client.models.retrieve("tiny");
if (one.id !== "tiny") fail(`models.retrieve ${JSON.stringify(one)}`);

// A parameter kvfleet does not implement is a 400 (the SDK's BadRequestError).
try {
  await client.chat.completions.create({ ...chatParams, tools: [{ type: "function", function: { name: "f", parameters: {} } }] });
  fail("tools accepted");
} catch (e) {
  if (!(e instanceof OpenAI.BadRequestError)) fail(`tools: ${e}`);
}

// An error comes back as the SDK's typed error with the status.
try {
  await client.completions.create({ ...params, model: "no-such-model" });
  fail("unknown model accepted");
} catch (e) {
  if (!(e instanceof OpenAI.NotFoundError)) fail(`unknown model: ${e}`);
}
console.log(`ok: ${chunks} completion chunks, chat ${JSON.stringify(chatText).length} chars`);

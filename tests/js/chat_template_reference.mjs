// Renders chat templates with @huggingface/jinja, the reference for chat/ (tests/chat/
// reference_test.cpp compares its output byte for byte).
//
// Usage: node chat_template_reference.mjs INPUT.json
// INPUT: a list of jobs, each
//   {"template": "...", "bos_token": "...", "eos_token": "...", "extra": {...},
//    "conversations": [{"messages": [...], "add_generation_prompt": bool, "tools": [...]|null,
//                       "kwargs": {...}}]}
//   or {"template": "...", "contexts": [{...top-level variables...}]}
// Output (stdout): a list with one entry per job, each a list of {"ok": true, "text": "..."} or
// {"ok": false, "error": "..."}, one per conversation/context.
import { readFileSync } from "node:fs";
import { Template } from "@huggingface/jinja";

// vLLM's text-only flattening, as chat/chat_template.cpp does it: text parts joined with "\n".
function flatten(message) {
  if (!Array.isArray(message.content)) return message;
  return { ...message, content: message.content.map((part) => part.text).join("\n") };
}

// A lone surrogate (indexing into an emoji) is written as U+FFFD, as Node writes it to UTF-8.
function attempt(fn) {
  try {
    return { ok: true, text: fn().toWellFormed() };
  } catch (e) {
    return { ok: false, error: String(e && e.message !== undefined ? e.message : e) };
  }
}

const jobs = JSON.parse(readFileSync(process.argv[2], "utf8"));
const results = jobs.map((job) => {
  let template;
  try {
    template = new Template(job.template);
  } catch (e) {
    const error = { ok: false, error: `parse: ${e.message}` };
    return (job.contexts ?? job.conversations).map(() => error);
  }
  if (job.contexts) return job.contexts.map((context) => attempt(() => template.render(context)));
  return job.conversations.map((c) =>
    attempt(() => {
      const context = {
        messages: c.messages.map(flatten),
        add_generation_prompt: c.add_generation_prompt,
        bos_token: job.bos_token,
        eos_token: job.eos_token,
      };
      if (c.tools !== undefined && c.tools !== null) context.tools = c.tools;
      Object.assign(context, job.extra ?? {}, c.kwargs ?? {});
      return template.render(context);
    }),
  );
});
process.stdout.write(JSON.stringify(results));

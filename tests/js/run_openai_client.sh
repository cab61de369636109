#!/usr/bin/env bash
# Starts a local disaggregated cluster with `kvfleet up`, runs the official openai npm client
# against it, and stops the cluster. Usage: run_openai_client.sh KVFLEET_BINARY [MODEL_DIR]
# With MODEL_DIR (a Hugging Face folder) the cluster serves it and openai_client_hf.mjs checks
# the text against the folder's tokenizer; without, the built-in `tiny` model.
set -euo pipefail
bin=$1
model_dir=${2:-}
here=$(cd "$(dirname "$0")" && pwd)
if [ ! -d "$here/node_modules/openai" ]; then
  echo "the openai npm package is missing: run scripts/test (it runs 'npm ci' in tests/js)" >&2
  exit 1
fi
log=$(mktemp)
"$bin" up --model "${model_dir:-tiny}" --port 0 --prefill 1 --decode 1 >"$log" 2>&1 &
up=$!
trap 'kill -INT $up 2>/dev/null; wait $up 2>/dev/null; rm -f "$log"' EXIT
url=""
# Up to 5 minutes: loading a folder with a 150K-token vocabulary takes a minute and more under
# the sanitizers on a busy machine.
for _ in $(seq 1 3000); do
  url=$(grep -o 'ready at http://[0-9.:]*' "$log" | head -1 | cut -d' ' -f3 || true)
  [ -n "$url" ] && break
  kill -0 $up 2>/dev/null || { cat "$log" >&2; exit 1; }
  sleep 0.1
done
[ -n "$url" ] || { echo "the cluster did not become ready" >&2; cat "$log" >&2; exit 1; }
if [ -n "$model_dir" ]; then
  node "$here/openai_client_hf.mjs" "$url" "$model_dir" || { cat "$log" >&2; exit 1; }
else
  node "$here/openai_client.mjs" "$url" || { cat "$log" >&2; exit 1; }
fi

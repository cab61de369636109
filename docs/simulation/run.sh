#!/bin/sh
# Reproduces every figure of docs/SIMULATION.md, from the repository root:
#   docs/simulation/run.sh                       # uses build/kvfleet
#   KVFLEET=/path/to/kvfleet docs/simulation/run.sh
# Each line is independent (the simulator is deterministic: same flags, same numbers), so the
# lines can be run in any order or in parallel. `simulate --compare` writes its JSON without the
# per-token inter-token latencies; afterwards slim.py drops them from the single runs' JSON too
# (`--save-result` keeps them) and rounds numbers to 6 significant digits; every summary figure
# is kept.
set -eu
K=${KVFLEET:-build/kvfleet}
D=docs/simulation

# --- Yi-34B-200K, 8 x A100-80G, tp 1: 8 colocated vs 4 prefill + 4 decode, KV over NVLink ------
$K simulate --compare --model yi-34b-200k --hardware a100-80g --tp 1 --link nvlink --colocated 8 --workloads 4k:4000:250 --sweep-rates 1,2,3,4,5,6,8 --num-prompts 300 --goodput ttft:2700 tpot:100 --seed 1 --out $D/yi34b-a100x8-tp1-4k
$K simulate --compare --model yi-34b-200k --hardware a100-80g --tp 1 --link nvlink --colocated 8 --workloads 16k:16000:250 --sweep-rates 0.25,0.5,0.75,1,1.25,1.5,2 --num-prompts 300 --goodput ttft:11500 tpot:100 --seed 1 --out $D/yi34b-a100x8-tp1-16k
$K simulate --compare --model yi-34b-200k --hardware a100-80g --tp 1 --link nvlink --colocated 8 --workloads 32k:32000:250 --sweep-rates 0.1,0.2,0.3,0.4,0.5,0.6,0.8 --num-prompts 300 --goodput ttft:25200 tpot:100 --seed 1 --out $D/yi34b-a100x8-tp1-32k
# the same 16K sweep with a 256 GiB host KV store per worker (preemption swaps instead of recomputing)
$K simulate --compare --model yi-34b-200k --hardware a100-80g --tp 1 --link nvlink --colocated 8 --host-kv-bytes 256GiB --workloads 16k:16000:250 --sweep-rates 0.25,0.5,0.75,1,1.25,1.5,2 --num-prompts 300 --goodput ttft:11500 tpot:100 --seed 1 --out $D/yi34b-a100x8-tp1-16k-hostkv

# --- Yi-34B-200K, 16 x A100-80G, tp 2: 8 colocated vs 4 + 4, KV over InfiniBand (two nodes) ----
$K simulate --compare --model yi-34b-200k --hardware a100-80g --tp 2 --link infiniband --colocated 8 --workloads 64k:64000:250 --sweep-rates 0.1,0.2,0.3,0.4,0.5,0.6,0.8 --num-prompts 200 --goodput ttft:30500 tpot:100 --seed 1 --out $D/yi34b-a100x16-tp2-64k
$K simulate --compare --model yi-34b-200k --hardware a100-80g --tp 2 --link infiniband --colocated 8 --workloads 100k:100000:250 --sweep-rates 0.05,0.1,0.15,0.2,0.3,0.4 --num-prompts 200 --goodput ttft:55100 tpot:100 --seed 1 --out $D/yi34b-a100x16-tp2-100k

# --- Llama-3.1-70B, 8 x H100-80G: tp 2 (4 colocated vs 2 + 2), tp 4 (2 colocated vs 1 + 1) -----
$K simulate --compare --model llama-3.1-70b --hardware h100-80g --tp 2 --link nvlink4 --colocated 4 --workloads 4k:4000:250 --sweep-rates 1,2,4,6,8,10,12 --num-prompts 300 --goodput ttft:1000 tpot:100 --seed 1 --out $D/llama70b-h100x8-tp2-4k
$K simulate --compare --model llama-3.1-70b --hardware h100-80g --tp 2 --link nvlink4 --colocated 4 --workloads 16k:16000:250 --sweep-rates 0.5,1,1.5,2,2.5,3,4 --num-prompts 300 --goodput ttft:4000 tpot:100 --seed 1 --out $D/llama70b-h100x8-tp2-16k
$K simulate --compare --model llama-3.1-70b --hardware h100-80g --tp 2 --link nvlink4 --colocated 4 --workloads 32k:32000:250 --sweep-rates 0.2,0.4,0.6,0.8,1,1.2 --num-prompts 300 --goodput ttft:8400 tpot:100 --seed 1 --out $D/llama70b-h100x8-tp2-32k
$K simulate --compare --model llama-3.1-70b --hardware h100-80g --tp 4 --link nvlink4 --colocated 2 --workloads 64k:64000:250 --sweep-rates 0.05,0.1,0.15,0.2,0.3,0.4 --num-prompts 200 --goodput ttft:10500 tpot:100 --seed 1 --out $D/llama70b-h100x8-tp4-64k
$K simulate --compare --model llama-3.1-70b --hardware h100-80g --tp 4 --link nvlink4 --colocated 2 --workloads 100k:100000:250 --sweep-rates 0.03,0.06,0.1,0.15,0.2,0.3 --num-prompts 200 --goodput ttft:18200 tpot:100 --seed 1 --out $D/llama70b-h100x8-tp4-100k

# --- Llama-3.1-70B, 16 x H100-80G: tp 2 (8 colocated vs 4 + 4), tp 4 (4 vs 2 + 2), InfiniBand --
$K simulate --compare --model llama-3.1-70b --hardware h100-80g --tp 2 --link infiniband --colocated 8 --workloads 4k:4000:250 --sweep-rates 2,4,8,12,16,20,24 --num-prompts 300 --goodput ttft:1000 tpot:100 --seed 1 --out $D/llama70b-h100x16-tp2-4k
$K simulate --compare --model llama-3.1-70b --hardware h100-80g --tp 2 --link infiniband --colocated 8 --workloads 16k:16000:250 --sweep-rates 1,2,3,4,5,6,8 --num-prompts 300 --goodput ttft:4000 tpot:100 --seed 1 --out $D/llama70b-h100x16-tp2-16k
$K simulate --compare --model llama-3.1-70b --hardware h100-80g --tp 2 --link infiniband --colocated 8 --workloads 32k:32000:250 --sweep-rates 0.4,0.8,1.2,1.6,2,2.4 --num-prompts 300 --goodput ttft:8400 tpot:100 --seed 1 --out $D/llama70b-h100x16-tp2-32k
$K simulate --compare --model llama-3.1-70b --hardware h100-80g --tp 4 --link infiniband --colocated 4 --workloads 64k:64000:250 --sweep-rates 0.1,0.2,0.3,0.4,0.6,0.8 --num-prompts 200 --goodput ttft:10500 tpot:100 --seed 1 --out $D/llama70b-h100x16-tp4-64k
$K simulate --compare --model llama-3.1-70b --hardware h100-80g --tp 4 --link infiniband --colocated 4 --workloads 100k:100000:250 --sweep-rates 0.06,0.12,0.2,0.3,0.4,0.6 --num-prompts 200 --goodput ttft:18200 tpot:100 --seed 1 --out $D/llama70b-h100x16-tp4-100k

# --- single runs behind the explanations (bench serve's JSON plus "simulation") ---------------
mkdir -p $D/runs
# the paper's running example: Yi-34B-200K on one A100, one request of 4K or 50K, then two 50K
# requests at once (one fits beside the weights; the host store takes the other)
$K simulate --model yi-34b-200k --hardware a100-80g --colocated 1 --input-len 4000 --output-len 250 --num-prompts 1 --percentiles 50,99 --seed 1 --save-result $D/runs/yi34b-a100x1-paper-4k-1req.json > /dev/null
$K simulate --model yi-34b-200k --hardware a100-80g --colocated 1 --input-len 50000 --output-len 250 --num-prompts 1 --percentiles 50,99 --seed 1 --save-result $D/runs/yi34b-a100x1-paper-50k-1req.json > /dev/null
$K simulate --model yi-34b-200k --hardware a100-80g --colocated 1 --input-len 50000 --output-len 250 --num-prompts 2 --host-kv-bytes 200GiB --percentiles 50,99 --seed 1 --save-result $D/runs/yi34b-a100x1-paper-50k-2req-hostkv.json > /dev/null
# an uneven split for the prefill-heavy 64K workload: 6 prefill + 2 decode
$K simulate --model yi-34b-200k --hardware a100-80g --tp 2 --link infiniband --prefill 6 --decode 2 --input-len 64000 --output-len 250 --num-prompts 200 --sweep-rates 0.4,0.6,0.8 --goodput ttft:30500 tpot:100 --percentiles 50,99 --seed 1 --save-result $D/runs/yi34b-a100x16-tp2-64k-6p2d.json > /dev/null
# the client never has more requests in flight than the decode pool's KV holds (4 workers x 4)
$K simulate --model yi-34b-200k --hardware a100-80g --tp 1 --link nvlink --prefill 4 --decode 4 --input-len 16000 --output-len 250 --num-prompts 300 --request-rate 2 --max-concurrency 16 --goodput ttft:11500 tpot:100 --percentiles 50,99 --seed 1 --save-result $D/runs/yi34b-a100x8-tp1-16k-4p4d-maxconc16.json > /dev/null
# Llama-3.1-70B at tp 2 with 64K prompts: one request's KV fits per worker
$K simulate --model llama-3.1-70b --hardware h100-80g --tp 2 --link nvlink4 --prefill 2 --decode 2 --input-len 64000 --output-len 250 --num-prompts 100 --sweep-rates 0.1,0.4 --goodput ttft:18700 tpot:100 --percentiles 50,99 --seed 1 --save-result $D/runs/llama70b-h100x8-tp2-64k-2p2d.json > /dev/null
$K simulate --model llama-3.1-70b --hardware h100-80g --tp 2 --link nvlink4 --colocated 4 --input-len 64000 --output-len 250 --num-prompts 100 --sweep-rates 0.1,0.4 --goodput ttft:18700 tpot:100 --percentiles 50,99 --seed 1 --save-result $D/runs/llama70b-h100x8-tp2-64k-4c.json > /dev/null
# colocated with prefill chunks near the roofline's ridge point (peak / bandwidth = 153 tokens on an A100)
$K simulate --model yi-34b-200k --hardware a100-80g --tp 1 --link nvlink --colocated 8 --max-batch-tokens 160 --input-len 4000 --output-len 250 --num-prompts 300 --sweep-rates 4,6 --goodput ttft:2700 tpot:100 --percentiles 50,99 --seed 1 --save-result $D/runs/yi34b-a100x8-tp1-4k-8c-chunk160.json > /dev/null
$K simulate --model yi-34b-200k --hardware a100-80g --tp 2 --link infiniband --colocated 8 --max-batch-tokens 160 --input-len 64000 --output-len 250 --num-prompts 200 --sweep-rates 0.3,0.6 --goodput ttft:30500 tpot:100 --percentiles 50,99 --seed 1 --save-result $D/runs/yi34b-a100x16-tp2-64k-8c-chunk160.json > /dev/null

python3 $D/slim.py $D

#!/usr/bin/env python3
"""Shrinks the JSON that `kvfleet simulate` writes, in place, under the folder given.

Drops each run's per-request inter-token latencies ("itls": one list of output_len - 1 numbers
per request; 300 requests x 7 rates x 2 layouts come to ~28 MB) and rounds every other number to
6 significant digits (4 in the "simulation.concurrency" time series). Everything else is kept:
the summaries (mean / median / p50 / p99 of TTFT, TPOT, ITL, E2EL), the per-request ttfts,
e2els, input_lens, output_lens and start_times (so goodput under any TTFT / TPOT SLO can be
recomputed: TPOT = (e2el - ttft) / (output_len - 1)), and the "simulation" object. Run it once
on the command's output (a second run changes nothing).
"""
import json
import pathlib
import sys


def slim(x, digits=6):
    if isinstance(x, float):
        return float(f"{x:.{digits}g}")
    if isinstance(x, list):
        return [slim(v, digits) for v in x]
    if isinstance(x, dict):
        return {k: slim(v, 4 if k == "concurrency" else digits) for k, v in x.items() if k != "itls"}
    return x


def main(root):
    for path in sorted(pathlib.Path(root).rglob("*.json")):
        data = json.loads(path.read_text())
        path.write_text(json.dumps(slim(data), separators=(",", ":")) + "\n")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "docs/simulation")

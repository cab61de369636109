#!/usr/bin/env python3
"""Prints the tables of docs/SIMULATION.md from the JSON under docs/simulation/.

  python3 docs/simulation/tables.py                      # every compare folder, every rate
  python3 docs/simulation/tables.py yi34b-a100x8-tp1-4k:1,5,8 ...   # chosen folders and rates

Per layout and rate: throughput and goodput (req/s); TTFT, TPOT and ITL p50 / p99 (ms); the
mean TTFT phases (ms) as the coordinator records them; preemptions that recomputed a sequence
(`rp`) and KV hand-offs that found no room on the decode worker and recomputed the prompt there
(`ho-rc`); prompt tokens the workers computed per prompt token sent (`work`: above 1 when
preempted or handed-off requests were recomputed); and per role the mean utilisation
(busy / duration) and the generated tokens per engine step (the mean decode batch; on
colocated workers steps that carry only a prefill chunk count too).

  python3 docs/simulation/tables.py summary [FACTOR]

prints, per folder and layout, the highest goodput of the sweep under the folder's SLOs, and
under the same TTFT SLO with a tight TPOT SLO: FACTOR (default 1.5) x the decode step that
report.md predicts (batch 1, at the prompt length), recomputed from the per-request TTFT and
E2E latencies (TPOT = (e2el - ttft) / (output_len - 1), as `bench serve` computes it).
"""
import json
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent
PHASES = ["queue", "prefill", "kv_transfer", "decode_queue", "first_decode_step"]


def f(x, p=0):
    return "-" if x is None else f"{x:.{p}f}"


def roles(sim):
    out = {}
    for w in sim["workers"]:
        r = out.setdefault(w["role"], {"util": [], "tok": 0, "steps": 0})
        r["util"].append(w["utilisation"])
        r["tok"] += w["generated_tokens"]
        r["steps"] += w["steps"]
    parts = []
    for name in ("both", "prefill", "decode"):
        if name in out:
            r = out[name]
            util = 100 * sum(r["util"]) / len(r["util"])
            batch = r["tok"] / r["steps"] if r["steps"] else 0
            parts.append(f"{name} {util:.0f}%" + (f", {batch:.1f} tok/step" if name != "prefill" else ""))
    return "; ".join(parts)


def work(s):
    computed = sum(w["prompt_tokens"] for w in s["simulation"]["workers"])
    return computed / s["total_input_tokens"]


def goodput(s, ttft_ms, tpot_ms):
    good = 0
    for t, e, o in zip(s["ttfts"], s["e2els"], s["output_lens"]):
        tpot = (e - t) / (o - 1) * 1e3 if o > 1 else 0
        good += t * 1e3 <= ttft_ms and tpot <= tpot_ms
    return good / s["duration"]


def folders():
    """The compare folders that hold a report (a command that did not finish leaves none)."""
    return sorted(p.name for p in ROOT.iterdir() if p.is_dir() and (p / "report.md").exists())


def summary(factor):
    print(f"| folder | SLOs (ms) | best goodput (at rate), colocated | disaggregated | "
          f"tight TPOT SLO ({factor:g} x step, ms) | best goodput, colocated | disaggregated |\n"
          "|---|---|---|---|---|---|---|")
    for d in folders():
        step = float(re.search(r"decode step ([0-9.]+) ms", (ROOT / d / "report.md").read_text()).group(1))
        tight = round(factor * step)
        for path in sorted((ROOT / d).glob("*_results.json")):
            data = json.loads(path.read_text())
            s0 = data["colocated"][0]
            ttft, tpot = s0["slo_ttft_ms"], s0["slo_tpot_ms"]
            cells = []
            for limit in (tpot, tight):
                if limit == tight:
                    cells.append(f"{tight:g}")
                for layout in ("colocated", "disaggregated"):
                    best = max(data[layout], key=lambda s: goodput(s, ttft, limit))
                    cells.append(f"{goodput(best, ttft, limit):.2f} ({best['request_rate']:g})")
            print(f"| {d} | TTFT {ttft:g}, TPOT {tpot:g} | " + " | ".join(cells) + " |")


def row(layout, s):
    sim = s["simulation"]
    ph = sim["ttft_phases"]
    phases = " / ".join(f(ph.get(f"mean_{p}_ms"), 0 if p != "kv_transfer" else 1) for p in PHASES)
    rate = s["request_rate"]
    rate = f"{rate:g}" if isinstance(rate, (int, float)) else str(rate)  # "inf": all sent at once
    return (f"| {layout} | {rate} | {s['request_throughput']:.2f} | {f(s.get('request_goodput'), 2)} | "
            f"{f(s['p50_ttft_ms'])} / {f(s['p99_ttft_ms'])} | {f(s['p50_tpot_ms'], 1)} / {f(s['p99_tpot_ms'], 1)} | "
            f"{f(s['p50_itl_ms'], 1)} / {f(s['p99_itl_ms'], 1)} | {phases} | "
            f"{sim['recompute_preemptions']} / {sim['kv_handoff_recomputes']} | {work(s):.2f} | {roles(sim)} |")


HEADER = ("| layout | rate | thr. | goodput | TTFT p50 / p99 (ms) | TPOT p50 / p99 (ms) | ITL p50 / p99 (ms) | "
          "TTFT phases (ms): queue / prefill / kv_transfer / decode_queue / first_decode_step | rp / ho-rc | work | "
          "utilisation, tokens per step |\n|---|---|---|---|---|---|---|---|---|---|---|")


def table(folder, rates=None):
    results = sorted((ROOT / folder).glob("*_results.json"))
    for path in results:
        data = json.loads(path.read_text())
        print(f"\n`{folder}/{path.name}`\n")
        print(HEADER)
        for layout in ("colocated", "disaggregated"):
            for s in data.get(layout, []):
                if rates is None or s["request_rate"] in rates:
                    print(row(layout, s))


def runs():
    for path in sorted((ROOT / "runs").glob("*.json")):
        data = json.loads(path.read_text())
        data = data if isinstance(data, list) else [data]
        print(f"\n`runs/{path.name}`\n")
        print(HEADER)
        for s in data:
            print(row(s["simulation"]["layout"], s))


def main(args):
    if not args:
        for d in folders():
            table(d)
        runs()
        return
    if args[0] == "summary":
        summary(float(args[1]) if len(args) > 1 else 1.5)
        return
    for a in args:
        if a == "runs":
            runs()
            continue
        folder, _, rates = a.partition(":")
        table(folder, {float(r) for r in rates.split(",")} if rates else None)


if __name__ == "__main__":
    main(sys.argv[1:])

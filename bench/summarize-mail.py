#!/usr/bin/env python3
"""Summarizes bench/mail.sh's runs: medians per system and concurrency,
the epost/postfix ratios, and epost's storage writes per message.

usage: summarize-mail.py RUNS.jsonl OUT.json OUT.md NODES SIZE
"""
import json
import os
import platform
import statistics
import subprocess
import sys
import time


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def main():
    raw, out_json, out_md, nodes, size = sys.argv[1:6]
    runs = [json.loads(line) for line in open(raw) if line.strip()]
    groups = {}
    for r in runs:
        groups.setdefault((r["concurrency"], r["watch"], r["system"]), []).append(r)
    rows = []
    for (c, watch, system), rs in sorted(groups.items()):
        row = {
            "system": system,
            "concurrency": c,
            "watch": watch,
            "runs": len(rs),
            "messages_per_run": rs[0]["messages"],
            "p50_ms": median([r["p50_ms"] for r in rs]),
            "p90_ms": median([r["p90_ms"] for r in rs]),
            "p99_ms": median([r["p99_ms"] for r in rs]),
            "submit_p50_ms": median([r["submit_p50_ms"] for r in rs]),
            "throughput": median([r["throughput"] for r in rs]),
            "errors": sum(r["errors"] for r in rs),
            "load1": median([r["load1"] for r in rs]),
        }
        if system == "epost":
            per = {}
            for k in ("stored", "log_entries"):
                xs = []
                for r in rs:
                    b, a = r["counters_before"], r["counters_after"]
                    if k in a and k in b and r["sent"]:
                        xs.append((a[k] - b[k]) / r["sent"])
                if xs:
                    per[k] = median(xs)
            row["replica_writes_per_message"] = per.get("stored")
            row["log_entries_per_message"] = per.get("log_entries")
        rows.append(row)
    ratios = []
    for c, watch in sorted({(c, w) for c, w, _ in groups}):
        e = next((r for r in rows if r["system"] == "epost" and r["concurrency"] == c and r["watch"] == watch), None)
        p = next((r for r in rows if r["system"] == "postfix" and r["concurrency"] == c and r["watch"] == watch), None)
        if e and p and p["p50_ms"] and p["throughput"]:
            ratios.append({
                "concurrency": c,
                "watch": watch,
                "p50_epost_over_postfix": e["p50_ms"] / p["p50_ms"],
                "throughput_epost_over_postfix": e["throughput"] / p["throughput"],
            })
    go = subprocess.run(["go", "version"], capture_output=True, text=True).stdout.strip()
    summary = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cores": os.cpu_count(), "kernel": platform.release(), "go": go},
        "epost_nodes": int(nodes),
        "message_size": int(size),
        "summary": rows,
        "ratios": ratios,
        "runs": runs,
    }
    with open(out_json, "w") as f:
        json.dump(summary, f, indent=2)
        f.write("\n")

    def fmt(x, spec):
        return "n/a" if x is None else format(x, spec)

    lines = [
        "| system | c | watch | runs × msgs | p50 ms | p90 ms | p99 ms | SMTP p50 ms | msg/s | errors | load1 | replica writes/msg | log entries/msg |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append("| %s | %d | %s | %d × %d | %.1f | %.1f | %.1f | %.1f | %.1f | %d | %.2f | %s | %s |" % (
            r["system"], r["concurrency"], r["watch"], r["runs"], r["messages_per_run"], r["p50_ms"], r["p90_ms"], r["p99_ms"],
            r["submit_p50_ms"], r["throughput"], r["errors"], r["load1"],
            fmt(r.get("replica_writes_per_message"), ".1f"), fmt(r.get("log_entries_per_message"), ".1f")))
    lines.append("")
    lines.append("| c | watch | p50 epost/postfix | throughput epost/postfix |")
    lines.append("|---|---|---|---|")
    for q in ratios:
        lines.append("| %d | %s | %.2f | %.2f |" % (q["concurrency"], q["watch"], q["p50_epost_over_postfix"], q["throughput_epost_over_postfix"]))
    lines.append("")
    lines.append("Medians over the runs; %d epost nodes; %d-byte messages; %s; %d cores." % (int(nodes), int(size), go, os.cpu_count()))
    with open(out_md, "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Tabulates and plots bench/sim-scale.sh's runs: per-node routing state
and control traffic against N on a log axis, with a reference curve (a
constant leaf set plus a routing table growing as log N) through the
first point. Plain SVG, no third-party packages.

usage: plot-scale.py RUNS.jsonl OUT.json OUT.md OUT.svg
"""
import json
import math
import sys


def main():
    raw, out_json, out_md, out_svg = sys.argv[1:5]
    runs = [json.loads(line) for line in open(raw) if line.strip()]
    runs.sort(key=lambda r: r["nodes"])
    with open(out_json, "w") as f:
        json.dump({"runs": runs}, f, indent=2)
        f.write("\n")

    lines = [
        "| N | wall s | events | events/s | peak RSS MB | RSS KB/node | table entries/node | leaf set/node | state/node | control msgs/node/s | avg hops | correct |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        rss = r.get("peak_rss_kb", 0)
        lines.append("| %d | %.1f | %d | %d | %.0f | %.1f | %.2f | %.2f | %.2f | %.4f | %.3f | %g |" % (
            r["nodes"], r.get("process_wall_seconds", r["wall_seconds"]), r["events"], r["events_per_s"],
            rss / 1024, rss / r["nodes"], r.get("mean_table_entries", 0), r.get("mean_leaf_set", 0),
            r.get("mean_table_entries", 0) + r.get("mean_leaf_set", 0), r.get("control_msgs_per_node_s", 0),
            r["avg_hops"], r["correct_fraction"]))
    with open(out_md, "w") as f:
        f.write("\n".join(lines) + "\n")
    with open(out_svg, "w") as f:
        f.write(svg(runs))


def svg(runs):
    W, H = 720, 420
    left, right, top, bottom = 70, 170, 40, 60
    pw, ph = W - left - right, H - top - bottom
    ns = [r["nodes"] for r in runs]
    state = [r.get("mean_table_entries", 0) + r.get("mean_leaf_set", 0) for r in runs]
    ctl = [r.get("control_msgs_per_node_s", 0) for r in runs]
    lo, hi = math.log10(min(ns)), math.log10(max(ns))
    if hi - lo < 1e-9:
        lo, hi = lo - 0.5, hi + 0.5
    # Reference: the leaf set is a constant, the routing table should grow
    # as log N; the curve goes through the first point.
    leaf0, table0 = runs[0].get("mean_leaf_set", 0), runs[0].get("mean_table_entries", 0)
    ref = [leaf0 + table0 * math.log(n) / math.log(ns[0]) for n in ns]
    smax = max(state + ref) * 1.15 or 1
    cmax = max(ctl) * 1.15 or 1

    def x(n):
        return left + (math.log10(n) - lo) / (hi - lo) * pw

    def ys(v):
        return top + ph - v / smax * ph

    def yc(v):
        return top + ph - v / cmax * ph

    out = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">' % (W, H),
           '<rect width="100%" height="100%" fill="white"/>',
           '<text x="%d" y="22" font-size="14">epost sim routing: per-node state and control traffic against N</text>' % left,
           '<rect x="%d" y="%d" width="%d" height="%d" fill="none" stroke="#444"/>' % (left, top, pw, ph)]
    # x axis: decades and the measured N.
    for n in ns:
        out.append('<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#ddd"/>' % (x(n), top, x(n), top + ph))
        out.append('<text x="%.1f" y="%d" text-anchor="middle">%s</text>' % (x(n), top + ph + 16, "{:,}".format(n)))
    out.append('<text x="%d" y="%d" text-anchor="middle">nodes N (log scale)</text>' % (left + pw // 2, H - 18))
    # Left axis: state.
    for i in range(6):
        v = smax * i / 5
        out.append('<text x="%d" y="%.1f" text-anchor="end" fill="#1f5fbf">%.0f</text>' % (left - 6, ys(v) + 4, v))
    out.append('<text transform="translate(18,%d) rotate(-90)" text-anchor="middle" fill="#1f5fbf">table + leaf-set entries per node</text>' % (top + ph // 2))
    # Right axis: control traffic.
    for i in range(6):
        v = cmax * i / 5
        out.append('<text x="%d" y="%.1f" fill="#c0392b">%.3f</text>' % (left + pw + 6, yc(v) + 4, v))
    out.append('<text transform="translate(%d,%d) rotate(90)" text-anchor="middle" fill="#c0392b">control messages per node per second</text>' % (left + pw + 56, top + ph // 2))

    def poly(xs, ys_, color, dash=""):
        pts = " ".join("%.1f,%.1f" % p for p in zip(xs, ys_))
        d = ' stroke-dasharray="%s"' % dash if dash else ""
        s = ['<polyline points="%s" fill="none" stroke="%s" stroke-width="2"%s/>' % (pts, color, d)]
        if not dash:
            s += ['<circle cx="%.1f" cy="%.1f" r="3.5" fill="%s"/>' % (a, b, color) for a, b in zip(xs, ys_)]
        return s

    out += poly([x(n) for n in ns], [ys(v) for v in ref], "#888", "5,4")
    out += poly([x(n) for n in ns], [ys(v) for v in state], "#1f5fbf")
    out += poly([x(n) for n in ns], [yc(v) for v in ctl], "#c0392b")
    lx, ly = left + 84, top + 16
    for i, (label, color, dash) in enumerate([("state/node", "#1f5fbf", ""), ("control msgs/node/s", "#c0392b", ""), ("leaf set + table ∝ log N", "#888", "5,4")]):
        y = ly + i * 18
        d = ' stroke-dasharray="%s"' % dash if dash else ""
        out.append('<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s" stroke-width="2"%s/>' % (lx - 70, y, lx - 50, y, color, d))
        out.append('<text x="%d" y="%d" font-size="11">%s</text>' % (lx - 46, y + 4, label))
    out.append("</svg>\n")
    return "\n".join(out)


if __name__ == "__main__":
    main()

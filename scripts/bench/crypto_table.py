#!/usr/bin/env python3
"""Markdown table of the `cargo bench --bench crypto` results in target/criterion.

    python3 scripts/bench/crypto_table.py [CRITERION_DIR]   (default target/criterion)

Throughput from criterion's slope estimate (or its mean where there is no slope):
Gbit/s of plaintext and millions of packets per second; ratios against raw ring and
boringtun from the same run, and for two threads on one peer, the ratio to one thread.
The last column is the most CPU that other processes took (in cores, of the box's two)
while any benchmark of the row ran, as benches/crypto.rs recorded it: a row measured
while a build ran next door is marked, and its two-thread figures are not to be trusted.
"""

import json
import os
import sys

SIZES = [64, 512, 1420]
IMPLS = ["mpwg", "boringtun", "ring"]


def estimate(base, group, func, param=None):
    d = os.path.join(base, group, func, *([str(param)] if param is not None else []), "new")
    try:
        with open(os.path.join(d, "estimates.json")) as f:
            est = json.load(f)
        with open(os.path.join(d, "benchmark.json")) as f:
            bench = json.load(f)
    except OSError:
        return None
    e = est.get("slope") or est["mean"]
    ns = e["point_estimate"]
    lo, hi = e["confidence_interval"]["lower_bound"], e["confidence_interval"]["upper_bound"]
    tp = bench.get("throughput") or {}
    return {"ns": ns, "ns_lo": lo, "ns_hi": hi, "bytes": tp.get("Bytes"), "elems": tp.get("Elements")}


def other_load(base, group, func, param=None):
    p = os.path.join(base, group, func, *([str(param)] if param is not None else []), "mpwg-other-load.txt")
    try:
        with open(p) as f:
            return float(f.read().strip())
    except (OSError, ValueError):
        return None


def load_cell(values):
    vals = [v for v in values if v is not None]
    if not vals:
        return "n/a"
    m = max(vals)
    return f"{m:.2f}" + (" ⚠" if m > 0.1 else "")


def gbps(e):
    return e["bytes"] * 8 / e["ns"] if e and e["bytes"] else None


def mpps(e, size):
    return e["bytes"] / size / e["ns"] * 1e3 if e and e["bytes"] else None


def r(a, b):
    return "n/a" if a is None or b is None or not b else f"{a / b:.2f}×"


def f(v, d=2):
    return "n/a" if v is None else f"{v:.{d}f}"


def main():
    base = sys.argv[1] if len(sys.argv) > 1 else "target/criterion"
    out = []
    for op in ("seal", "open"):
        one = f"{op}_1thread"
        two = f"{op}_2threads_one_peer"
        out.append(f"### {op}")
        out.append("")
        out.append(
            "| size | mpwg 1 thread Gbit/s (Mpps) | boringtun | ring | mpwg / ring | mpwg / boringtun "
            "| mpwg 2 threads Gbit/s | boringtun 2 threads | ring 2 threads | 2 threads / 1 thread: mpwg, boringtun, ring "
            "| other load, cores |"
        )
        out.append("|---|---|---|---|---|---|---|---|---|---|---|")
        for size in SIZES:
            e1 = {i: estimate(base, one, i, size) for i in IMPLS}
            e2 = {i: estimate(base, two, i, size) for i in IMPLS}
            g1 = {i: gbps(e1[i]) for i in IMPLS}
            g2 = {i: gbps(e2[i]) for i in IMPLS}
            out.append(
                f"| {size} B | {f(g1['mpwg'])} ({f(mpps(e1['mpwg'], size))}) | {f(g1['boringtun'])} ({f(mpps(e1['boringtun'], size))}) "
                f"| {f(g1['ring'])} ({f(mpps(e1['ring'], size))}) | {r(g1['mpwg'], g1['ring'])} | {r(g1['mpwg'], g1['boringtun'])} "
                f"| {f(g2['mpwg'])} | {f(g2['boringtun'])} | {f(g2['ring'])} "
                f"| {r(g2['mpwg'], g1['mpwg'])}, {r(g2['boringtun'], g1['boringtun'])}, {r(g2['ring'], g1['ring'])} "
                f"| {load_cell([other_load(base, g, i, size) for g in (one, two) for i in IMPLS])} |"
            )
        out.append("")
    out.append("### handshake (one core)")
    out.append("")
    out.append("| exchange | handshakes/s | µs each | other load, cores |")
    out.append("|---|---|---|---|")
    for name in ("mpwg_full_exchange", "mpwg_responder_only", "boringtun_full_exchange"):
        e = estimate(base, "handshake", name)
        if e:
            load = load_cell([other_load(base, "handshake", name)])
            out.append(f"| {name} | {1e9 / e['ns']:.0f} | {e['ns'] / 1e3:.1f} | {load} |")
    print("\n".join(out))


if __name__ == "__main__":
    main()

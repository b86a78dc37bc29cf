#!/usr/bin/env python3
"""The report of scripts/bench.sh --modes (scripts/bench/modes.sh).

    modes.py line OUTDIR SCENARIO ROUND SYSTEM   one progress line of a mode test
    modes.py final OUTDIR                        modes.json and modes.md

OUTDIR holds modes.tsv (scenario, round, system, A's TCP segments sent, retransmitted,
CPU ticks of both daemons, 1-minute load average after the test) and
raw/modes/SCENARIO-rROUND-SYSTEM.json (iperf3 -J).

Every ratio is taken per round (the systems of a scenario are interleaved within a
round, so one round's ratio shares its machine state), then given as the median over
the rounds and the min-max. "Best single path" is, per round, the better of the two
paths measured alone in that round.
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from report import iperf_tcp, read_tsv, stats  # noqa: E402

SCENARIOS = {
    "sym": "symmetric, 40+40 Mbit/s",
    "rate": "asymmetric rate, 40+8 Mbit/s",
    "delay": "asymmetric delay, 40+40 Mbit/s, 10 ms + 40 ms one way",
    "lossy": "lossy, 40+40 Mbit/s, 10% loss on path 2",
}
SYSTEMS = {
    "s1": "path 1 alone",
    "s2": "path 2 alone",
    "dup": "duplicate",
    "fo": "failover",
    "agg": "aggregate",
    "ada": "adaptive",
}
# (scenario, system, against "best" or "dup", at least, the words)
GOALS = [
    ("sym", "agg", "dup", 1.7, "40+40: aggregate ≥ 1.7× duplicate"),
    ("rate", "agg", "dup", 1.0, "40+8: aggregate no worse than duplicate"),
    ("delay", "agg", "best", 1.5, "10 ms + 40 ms: aggregate ≥ 1.5× the best single path"),
    ("lossy", "agg", "best", 0.9, "10% loss on one path: aggregate ≥ 0.9× the best single path"),
]


def figure(outdir, s, r, sys_):
    """Mbit/s, retransmitted share of segments, daemons' CPU ticks, load: one test."""
    res = iperf_tcp(os.path.join(outdir, "raw", "modes", f"{s}-r{r}-{sys_}.json"))
    row = next((x for x in read_tsv(os.path.join(outdir, "modes.tsv")) if x[:3] == [s, str(r), sys_]), None)
    if res is None:
        return None
    out = {"mbit": res["gbps"] * 1e3, "retrans_pct": None, "segs": None, "retrans": None, "cpu_ticks": None, "load1": None}
    if row and len(row) >= 7:
        try:
            segs, re_ = int(row[3]), int(row[4])
            out.update(segs=segs, retrans=re_, retrans_pct=100.0 * re_ / segs if segs else None)
        except ValueError:
            pass
        out["cpu_ticks"] = int(row[5]) if row[5].isdigit() else None
        try:
            out["load1"] = float(row[6])
        except ValueError:
            pass
    return out


def cmd_line(outdir, s, r, sys_):
    f = figure(outdir, s, r, sys_)
    if f is None:
        print("FAILED")
        return
    re_ = f", {f['retrans']} of {f['segs']} segments retransmitted ({f['retrans_pct']:.2f}%)" if f["segs"] else ""
    print(f"{f['mbit']:.1f} Mbit/s{re_}, load {f['load1']}")


def fmt(st, digits=1, unit=""):
    if not st:
        return "–"
    m, lo, hi = st["median"], st["min"], st["max"]
    return f"{m:.{digits}f}{unit} ({lo:.{digits}f}–{hi:.{digits}f})"


def results(outdir):
    rows = read_tsv(os.path.join(outdir, "modes.tsv"))
    rounds = {}
    for row in rows:
        if len(row) >= 3:
            rounds.setdefault(row[0], set()).add(int(row[1]))
    out = {}
    for s, rs in rounds.items():
        per = {sys_: {} for sys_ in SYSTEMS}
        for r in sorted(rs):
            for sys_ in SYSTEMS:
                f = figure(outdir, s, r, sys_)
                if f:
                    per[sys_][r] = f
        best = {}
        for r in sorted(rs):
            c = [per[x][r]["mbit"] for x in ("s1", "s2") if r in per[x]]
            if c:
                best[r] = max(c)
        e = {"label": SCENARIOS.get(s, s), "rounds": sorted(rs), "systems": {}}
        loads = []
        for sys_, fr in per.items():
            vs_best = [fr[r]["mbit"] / best[r] for r in fr if best.get(r)]
            vs_dup = [fr[r]["mbit"] / per["dup"][r]["mbit"] for r in fr if r in per["dup"] and per["dup"][r]["mbit"]]
            loads += [f["load1"] for f in fr.values() if f["load1"] is not None]
            e["systems"][sys_] = {
                "label": SYSTEMS[sys_],
                "mbit": stats([f["mbit"] for f in fr.values()]),
                "retrans_pct": stats([f["retrans_pct"] for f in fr.values()]),
                "cpu_s": stats([f["cpu_ticks"] / CLK for f in fr.values() if f["cpu_ticks"] is not None]),
                "vs_best_single": stats(vs_best),
                "vs_duplicate": stats(vs_dup),
                "per_round": fr,
            }
        e["best_single_mbit"] = stats(list(best.values()))
        e["load1"] = stats(loads)
        out[s] = e
    return out


def goals(res):
    out = []
    for s, sys_, against, target, words in GOALS:
        e = res.get(s, {}).get("systems", {}).get(sys_)
        st = (e or {}).get("vs_best_single" if against == "best" else "vs_duplicate")
        g = {"goal": words, "target": target, "measured": st["median"] if st else None,
             "min": st["min"] if st else None, "max": st["max"] if st else None}
        g["met"] = None if not st else st["median"] >= target
        if s == "delay" and e and e["retrans_pct"]:
            g["retrans_pct"] = e["retrans_pct"]["median"]
            g["met"] = g["met"] and g["retrans_pct"] < 1.0
            g["goal"] += ", under 1% of segments retransmitted"
        out.append(g)
    e = res.get("sym", {}).get("systems", {}).get("ada")
    if e and e["mbit"]:
        m = e["mbit"]
        out.append({"goal": "40+40: adaptive bulk TCP ≥ 54 Mbit/s", "target": 54.0, "measured": m["median"],
                    "min": m["min"], "max": m["max"], "met": m["median"] >= 54.0})
    return out


def write_md(path, meta, res, gl):
    with open(path, "w") as f:
        f.write("## Mode scenarios (--modes)\n\n")
        f.write(f"`{meta.get('command', '')}` at `{meta.get('git_rev', '?')}`, {meta.get('date', '')}; "
                f"{meta.get('rounds', '?')} rounds of {meta.get('duration', '?')} s of 1-stream TCP, A to B, "
                f"congestion control {meta.get('modes_cc', '?')}, "
                "per system and scenario; two mpwg ends over two paths through a router with the link "
                "emulator, tc tbf at both ends of each path.\n\n")
        f.write("Goodput: Mbit/s at the receiver, median (min–max). Ratios: per round, then median (min–max). "
                "Best single: per round, the better of path 1 alone and path 2 alone. "
                "Retransmits: A's RetransSegs / OutSegs. Load: the 1-minute load average after each test.\n\n")
        f.write("### Summary: ratios to the best single path, median (min–max) over rounds\n\n")
        f.write("| scenario | best single, Mbit/s | duplicate | failover | aggregate | adaptive | "
                "aggregate / duplicate | retransmits: best single / aggregate | load average |\n")
        f.write("|---|---|---|---|---|---|---|---|---|\n")
        for s in SCENARIOS:
            e = res.get(s)
            if not e:
                continue
            x = e["systems"]
            # the retransmits of the faster path alone
            fast = max(("s1", "s2"), key=lambda k: x[k]["mbit"]["median"] if x[k]["mbit"] else -1)
            single, agg_re = x[fast]["retrans_pct"], x["agg"]["retrans_pct"]
            re_ = f"{single['median']:.2f}% / {agg_re['median']:.2f}%" if single and agg_re else "–"
            f.write(f"| {e['label']} | {fmt(e['best_single_mbit'])} | "
                    + " | ".join(fmt(x[k]["vs_best_single"], 2, "×") for k in ("dup", "fo", "agg", "ada"))
                    + f" | {fmt(x['agg']['vs_duplicate'], 2, '×')} | {re_} | {fmt(e['load1'], 2)} |\n")
        f.write("\n")
        for s in SCENARIOS:
            e = res.get(s)
            if not e:
                continue
            f.write(f"### {e['label']}\n\n")
            f.write(f"Best single path: {fmt(e['best_single_mbit'])} Mbit/s; load average {fmt(e['load1'], 2)}\n\n")
            f.write("| system | goodput, Mbit/s | / best single | / duplicate | retransmits | daemons' CPU s |\n")
            f.write("|---|---|---|---|---|---|\n")
            for sys_, x in e["systems"].items():
                f.write(f"| {x['label']} | {fmt(x['mbit'])} | {fmt(x['vs_best_single'], 2, '×')} | "
                        f"{fmt(x['vs_duplicate'], 2, '×')} | {fmt(x['retrans_pct'], 2, '%')} | {fmt(x['cpu_s'], 2)} |\n")
            f.write("\n")
        f.write("### Goals (issue 12)\n\n| goal | measured (median, min–max) | met |\n|---|---|---|\n")
        for g in gl:
            m = "–" if g["measured"] is None else f"{g['measured']:.2f} ({g['min']:.2f}–{g['max']:.2f})"
            if "retrans_pct" in g:
                m += f"; retransmits {g['retrans_pct']:.2f}%"
            met = {True: "yes", False: "**no**", None: "not measured"}[g["met"]]
            f.write(f"| {g['goal']} | {m} | {met} |\n")
        f.write("\n")


def cmd_final(outdir):
    meta = {}
    for row in read_tsv(os.path.join(outdir, "meta.tsv")):
        if len(row) >= 2 and row[0] not in meta:
            meta[row[0]] = row[1]
    res = results(outdir)
    gl = goals(res)
    with open(os.path.join(outdir, "modes.json"), "w") as f:
        json.dump({"meta": meta, "scenarios": res, "goals": gl}, f, indent=1)
    write_md(os.path.join(outdir, "modes.md"), meta, res, gl)


try:
    CLK = float(os.sysconf("SC_CLK_TCK"))
except (ValueError, OSError):
    CLK = 100.0


def main(argv):
    if len(argv) >= 6 and argv[1] == "line":
        cmd_line(argv[2], argv[3], argv[4], argv[5])
    elif len(argv) >= 3 and argv[1] == "final":
        cmd_final(argv[2])
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

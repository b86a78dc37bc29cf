#!/usr/bin/env python3
"""Parses and summarises the raw files that scripts/bench.sh writes.

    report.py tcp FILE                 one progress line for an iperf3 TCP run
    report.py udp FILE PAYLOAD         one progress line for an iperf3 UDP run
    report.py ping FILE                one progress line for a ping log
    report.py server-line OUTDIR N ROUND TEST   one progress line of the server scenario
    report.py final OUTDIR             results.json, results.csv, results.md, chart.png

OUTDIR holds meta.tsv (key, value), configs.tsv (id, label, status, note),
cpu.tsv (config, round, test, CPU ticks of the daemon at side a, of side b, busy
ticks of the whole machine, of the ksoftirqd threads, user ticks of both daemons, user
ticks of the whole machine) and raw/CONFIG/rROUND-TEST.{json,ping}.

Statistics: every figure is measured once per round; the tables give the median
over rounds and the spread as min-max. RTT percentiles come from one
HdrHistogram per system that pools the pings of every round (the tails need the
samples), and the per-round p99 is kept in the JSON to show its spread.
"""

import csv
import json
import math
import os
import re
import statistics
import sys

TESTS = ["tcp1", "tcp4", "udp64", "udp1400"]
# IP packet size on the tunnel -> UDP payload that iperf3 sends (20 IP + 8 UDP).
UDP_PAYLOAD = {"udp64": 64 - 28, "udp1400": 1400 - 28}
MPWG = ["m1", "m2", "m3", "mx"]
# The anchors: the implementations a user would pick instead of mpwg. Every ratio is
# against the best of them measured in the same run, figure by figure.
ANCHORS = ["wggo", "wgn", "gt", "bt", "bt4"]
# (key, name, higher is better)
METRICS = [
    ("tcp1_gbps", "TCP 1 stream", True),
    ("tcp4_gbps", "TCP 4 streams", True),
    ("udp64_kpps", "UDP 64 B", True),
    ("udp1400_kpps", "UDP 1400 B", True),
    ("cpu_s_per_gb_tcp1", "CPU s/GB, 1 stream", False),
    ("cpu_s_per_gb_tcp4", "CPU s/GB, 4 streams", False),
    ("rtt_p99_ms", "RTT p99 under load", False),
]


def load_json(path):
    try:
        with open(path) as f:
            d = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(d, dict) or d.get("error") or "end" not in d:
        return None
    return d


def iperf_cpu_s(d, seconds, kind="total"):
    """CPU seconds iperf3 itself used, client and server (its own cpu_utilization_percent)."""
    u = d["end"].get("cpu_utilization_percent") or {}
    if f"host_{kind}" not in u:
        return None
    return (u[f"host_{kind}"] + u.get(f"remote_{kind}", 0.0)) / 100.0 * seconds


def iperf_tcp(path):
    d = load_json(path)
    if d is None:
        return None
    r = d["end"].get("sum_received") or {}
    if not r.get("seconds"):
        return None
    return {
        "gbps": r["bits_per_second"] / 1e9,
        "bytes": r["bytes"],
        "seconds": r["seconds"],
        "iperf_cpu_s": iperf_cpu_s(d, r["seconds"]),
        "iperf_user_s": iperf_cpu_s(d, r["seconds"], "user"),
    }


def iperf_udp(path, payload):
    d = load_json(path)
    if d is None:
        return None
    end = d["end"]
    r = end.get("sum_received") or end.get("sum") or {}
    s = end.get("sum_sent") or end.get("sum") or {}
    if not r.get("seconds"):
        return None
    received = r["bytes"] / payload
    sent = s.get("packets", 0)
    return {
        "kpps": received / r["seconds"] / 1e3,
        "sent_kpps": sent / s["seconds"] / 1e3 if s.get("seconds") else None,
        "loss_pct": 100.0 * (1 - received / sent) if sent else None,
        "bytes": r["bytes"],
        "seconds": r["seconds"],
        "iperf_cpu_s": iperf_cpu_s(d, r["seconds"]),
        "iperf_user_s": iperf_cpu_s(d, r["seconds"], "user"),
    }


PING_TIME = re.compile(r"time=([0-9.]+) ms")
PING_SUMMARY = re.compile(r"(\d+) packets transmitted, (\d+) received")


def ping_parse(path):
    """RTTs in microseconds, packets sent, packets answered."""
    rtts, sent, got = [], 0, 0
    try:
        with open(path) as f:
            for line in f:
                m = PING_TIME.search(line)
                if m:
                    rtts.append(max(1, round(float(m.group(1)) * 1000)))
                    continue
                m = PING_SUMMARY.search(line)
                if m:
                    sent, got = int(m.group(1)), int(m.group(2))
    except OSError:
        return None
    if not sent:
        return None
    return {"rtts_us": rtts, "sent": sent, "received": got}


def histogram(rtts_us):
    from hdrh.histogram import HdrHistogram

    h = HdrHistogram(1, 60_000_000, 3)
    for v in rtts_us:
        h.record_value(v)
    return h


def percentiles(h):
    if h.get_total_count() == 0:
        return None
    ms = lambda v: v / 1000.0  # noqa: E731
    return {
        "p50": ms(h.get_value_at_percentile(50)),
        "p90": ms(h.get_value_at_percentile(90)),
        "p99": ms(h.get_value_at_percentile(99)),
        "max": ms(h.get_max_value()),
        "count": h.get_total_count(),
    }


def fmt_num(v, digits=2):
    if v is None:
        return "n/a"
    if v >= 100:
        return f"{v:.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.{digits}f}"


# ---------------------------------------------------------------- progress lines


def cmd_tcp(path):
    r = iperf_tcp(path)
    print("FAILED" if r is None else f"{r['gbps']:.2f} Gbit/s")


def cmd_udp(path, payload):
    r = iperf_udp(path, int(payload))
    if r is None:
        print("FAILED")
    else:
        print(f"{r['kpps']:.0f} kpps received (sent {r['sent_kpps']:.0f} kpps, loss {r['loss_pct']:.1f}%)")


def cmd_ping(path):
    r = ping_parse(path)
    if r is None or not r["rtts_us"]:
        print("no ping answered")
        return
    p = percentiles(histogram(r["rtts_us"]))
    loss = 100.0 * (r["sent"] - r["received"]) / r["sent"]
    print(
        f"RTT p50 {p['p50']:.3f} p90 {p['p90']:.3f} p99 {p['p99']:.3f} max {p['max']:.3f} ms, loss {loss:.1f}%"
    )


# ---------------------------------------------------------------- final report


def read_tsv(path):
    try:
        with open(path) as f:
            return [line.rstrip("\n").split("\t") for line in f if line.strip()]
    except OSError:
        return []


def stats(values):
    vals = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not vals:
        return None
    return {
        "median": statistics.median(vals),
        "min": min(vals),
        "max": max(vals),
        "n": len(vals),
        "values": vals,
    }


def collect(outdir, meta, configs):
    clk = float(meta.get("clk_tck", "100"))
    rounds = int(meta.get("rounds", "1"))
    cpu = {}
    for row in read_tsv(os.path.join(outdir, "cpu.tsv")):
        if len(row) < 5:
            continue
        cid, rnd, test = row[0], int(row[1]), row[2]
        ticks = [int(x) if x not in ("", "-") else None for x in row[3:]]
        cpu[(cid, rnd, test)] = ticks
    results = {}
    for c in configs:
        cid = c["id"]
        if c["status"] != "ok":
            continue
        raw = os.path.join(outdir, "raw", cid)
        per = {k: [] for k in [
            "tcp1_gbps", "tcp4_gbps", "udp64_kpps", "udp1400_kpps",
            "udp64_sent_kpps", "udp1400_sent_kpps",
            "cpu_s_per_gb_tcp1", "cpu_s_per_gb_tcp4",
            "box_cpu_s_per_gb_tcp1", "box_cpu_s_per_gb_tcp4",
            "cpu_us_per_pkt_udp64", "cpu_us_per_pkt_udp1400",
            "rtt_p50_ms", "rtt_p90_ms", "rtt_p99_ms", "rtt_max_ms", "ping_loss_pct",
            "other_cpu_frac", "foreign_user_cpu_frac", "softirqd_cpu_frac_tcp1",
        ]}
        pooled = []
        ping_sent = ping_got = 0
        def other_load(res, ticks):
            # machine busy time minus the daemons and iperf3, per second of test: other
            # processes (a build next door) and kernel threads such as ksoftirqd
            if not res or not ticks or len(ticks) < 3 or ticks[2] is None or res["iperf_cpu_s"] is None:
                return None
            own = sum(t for t in ticks[:2] if t is not None) / clk
            sirq = ticks[3] / clk if len(ticks) > 3 and ticks[3] is not None else 0.0
            return max(0.0, (ticks[2] / clk - own - sirq - res["iperf_cpu_s"]) / res["seconds"])

        def foreign_user(res, ticks):
            # user time of the machine minus that of the daemons and iperf3: other
            # people's processes (softirq work never counts as user time)
            if not res or not ticks or len(ticks) < 6 or None in ticks[4:6] or res.get("iperf_user_s") is None:
                return None
            return max(0.0, (ticks[5] - ticks[4]) / clk - res["iperf_user_s"]) / res["seconds"]

        def softirqd(res, ticks):
            if not res or not ticks or len(ticks) < 4 or ticks[3] is None:
                return None
            return ticks[3] / clk / res["seconds"]

        for r in range(1, rounds + 1):
            for t in ("tcp1", "tcp4"):
                res = iperf_tcp(os.path.join(raw, f"r{r}-{t}.json"))
                per["other_cpu_frac"].append(other_load(res, cpu.get((cid, r, t))))
                per["foreign_user_cpu_frac"].append(foreign_user(res, cpu.get((cid, r, t))))
                per[f"{t}_gbps"].append(res["gbps"] if res else None)
                ticks = cpu.get((cid, r, t))
                if t == "tcp1":
                    per["softirqd_cpu_frac_tcp1"].append(softirqd(res, ticks))
                if res and ticks and ticks[0] is not None and ticks[1] is not None and c["has_daemon"]:
                    secs = (ticks[0] + ticks[1]) / clk
                    per[f"cpu_s_per_gb_{t}"].append(secs / (res["bytes"] / 1e9))
                else:
                    per[f"cpu_s_per_gb_{t}"].append(None)
                if res and ticks and len(ticks) > 2 and ticks[2] is not None:
                    per[f"box_cpu_s_per_gb_{t}"].append(ticks[2] / clk / (res["bytes"] / 1e9))
                else:
                    per[f"box_cpu_s_per_gb_{t}"].append(None)
            for t in ("udp64", "udp1400"):
                res = iperf_udp(os.path.join(raw, f"r{r}-{t}.json"), UDP_PAYLOAD[t])
                per["other_cpu_frac"].append(other_load(res, cpu.get((cid, r, t))))
                per["foreign_user_cpu_frac"].append(foreign_user(res, cpu.get((cid, r, t))))
                per[f"{t}_kpps"].append(res["kpps"] if res else None)
                per[f"{t}_sent_kpps"].append(res["sent_kpps"] if res else None)
                ticks = cpu.get((cid, r, t))
                if res and ticks and ticks[0] is not None and ticks[1] is not None and c["has_daemon"]:
                    pkts = res["bytes"] / UDP_PAYLOAD[t]
                    per[f"cpu_us_per_pkt_{t}"].append((ticks[0] + ticks[1]) / clk / pkts * 1e6 if pkts else None)
                else:
                    per[f"cpu_us_per_pkt_{t}"].append(None)
            p = ping_parse(os.path.join(raw, f"r{r}-tcp1.ping"))
            if p:
                ping_sent += p["sent"]
                ping_got += p["received"]
                pooled.extend(p["rtts_us"])
                pc = percentiles(histogram(p["rtts_us"])) if p["rtts_us"] else None
                per["ping_loss_pct"].append(100.0 * (p["sent"] - p["received"]) / p["sent"])
            else:
                pc = None
                per["ping_loss_pct"].append(None)
            for k in ("p50", "p90", "p99", "max"):
                per[f"rtt_{k}_ms"].append(pc[k] if pc else None)
        entry = {k: stats(v) for k, v in per.items()}
        # aligned by round (None where a round has no figure), for per-round ratios
        entry["per_round"] = per
        entry["rtt_pooled_ms"] = percentiles(histogram(pooled)) if pooled else None
        entry["ping_pooled_loss_pct"] = 100.0 * (ping_sent - ping_got) / ping_sent if ping_sent else None
        results[cid] = entry
    return results


def med(results, cid, key):
    e = results.get(cid, {}).get(key)
    return e["median"] if e else None


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def pooled_p99(results, cid):
    rp = results.get(cid, {}).get("rtt_pooled_ms")
    return rp["p99"] if rp else None


def figure(results, cid, key):
    """The run's figure for `key`: the median over rounds (RTT p99: pooled over rounds)."""
    if key == "rtt_p99_ms":
        return pooled_p99(results, cid)
    return med(results, cid, key)


def best_anchor(results, key, higher):
    """(anchor id, figure) of the best anchor for `key` in this run, or (None, None)."""
    got = [(a, figure(results, a, key)) for a in ANCHORS if a in results]
    got = [(a, v) for a, v in got if v is not None and v > 0]
    if not got:
        return None, None
    return (max if higher else min)(got, key=lambda av: av[1])


def round_ratios(results, num, den, key):
    """num/den for each round where both have a figure (interleaved: same machine state)."""
    a = results.get(num, {}).get("per_round", {}).get(key) or []
    b = results.get(den, {}).get("per_round", {}).get(key) or []
    return [x / y for x, y in zip(a, b) if x is not None and y]


def ratio_entry(results, num, den, key):
    r = ratio(figure(results, num, key), figure(results, den, key))
    rr = round_ratios(results, num, den, key)
    return {
        "ratio": r,
        "den": den,
        "round_min": min(rr) if rr else None,
        "round_max": max(rr) if rr else None,
        "rounds": rr,
    }


def crypto_ceiling(outdir):
    """Medians of the per-round crypto_rate lines: Gbit/s of plaintext one core seals and opens."""
    seal, opn = [], []
    for row in read_tsv(os.path.join(outdir, "crypto.tsv")):
        if len(row) < 2:
            continue
        kv = dict(x.split("=", 1) for x in row[1].split() if "=" in x)
        try:
            seal.append(float(kv["seal_gbps"]))
            opn.append(float(kv["open_gbps"]))
        except (KeyError, ValueError):
            continue
    if not seal:
        return None
    return {"seal_gbps": stats(seal), "open_gbps": stats(opn)}


def ceiling(results, crypto, nproc):
    """The box's ceiling for a tunnel: both ends' transport crypto plus what raw veth TCP
    costs the whole machine per GB, in the same run, spread over every core."""
    if not crypto:
        return None
    s, o = crypto["seal_gbps"]["median"], crypto["open_gbps"]["median"]
    crypto_s = 8 / s + 8 / o  # CPU s per GB: sealed once at one end, opened once at the other
    out = {"seal_gbps": s, "open_gbps": o, "crypto_cpu_s_per_gb": crypto_s, "nproc": nproc,
           "crypto_only_gbps": 8 * nproc / crypto_s}
    for t in ("tcp1", "tcp4"):
        raw = med(results, "raw", f"box_cpu_s_per_gb_{t}")
        if raw is None:
            continue
        out[f"raw_box_cpu_s_per_gb_{t}"] = raw
        out[f"ceiling_gbps_{t}"] = 8 * nproc / (crypto_s + raw)
        for m in ("m1", "m2"):
            g = med(results, m, f"{t}_gbps")
            if g is not None:
                out[f"{m}_fraction_{t}"] = g / out[f"ceiling_gbps_{t}"]
            box = med(results, m, f"box_cpu_s_per_gb_{t}")
            if box is not None:
                out[f"{m}_box_cpu_s_per_gb_{t}"] = box
    return out


def ratios_and_goals(results):
    out = {"best": {}, "ratios": {}, "vs_each": {}, "goals": []}
    for key, _, higher in METRICS:
        a, v = best_anchor(results, key, higher)
        out["best"][key] = {"anchor": a, "figure": v}
    for m in MPWG:
        if m not in results:
            continue
        out["ratios"][m] = {}
        for key, _, _ in METRICS:
            a = out["best"][key]["anchor"]
            out["ratios"][m][key] = ratio_entry(results, m, a, key) if a else None
    pairs = [("m1", a) for a in ANCHORS] + [("m2", "m1"), ("m3", "m1"), ("mx", "wggo")]
    # --baseline: this binary against the other one, and the other's own 2-path cost
    pairs += [("m1", "b1"), ("m2", "b2"), ("b2", "b1")]
    # --baseline2: this binary and the first baseline against the second
    pairs += [("m1", "c1"), ("m2", "c2"), ("b1", "c1"), ("b2", "c2"), ("c2", "c1")]
    for num, den in pairs:
        if num in results and den in results:
            out["vs_each"][f"{num}/{den}"] = {key: ratio_entry(results, num, den, key) for key, _, _ in METRICS}

    def goal(name, entry, target, higher=True):
        r = entry["ratio"] if entry else None
        out["goals"].append({
            "goal": name,
            "target": target,
            "measured": r,
            "against": entry["den"] if entry else None,
            "round_min": entry["round_min"] if entry else None,
            "round_max": entry["round_max"] if entry else None,
            "met": None if r is None else (r >= target if higher else r <= target),
        })

    best = out["ratios"].get("m1", {})
    goal("mpwg 1 path TCP 1 stream >= 2.0x the best anchor", best.get("tcp1_gbps"), 2.0)
    goal("mpwg 1 path TCP 4 streams >= 2.0x the best anchor", best.get("tcp4_gbps"), 2.0)
    goal("mpwg 1 path UDP 1400 B packet rate >= 2.0x the best anchor", best.get("udp1400_kpps"), 2.0)
    goal("mpwg 1 path CPU s/GB (1 stream) <= 0.5x the best anchor's", best.get("cpu_s_per_gb_tcp1"), 0.5, False)
    goal("mpwg 1 path CPU s/GB (4 streams) <= 0.5x the best anchor's", best.get("cpu_s_per_gb_tcp4"), 0.5, False)
    vs = out["vs_each"].get("m2/m1", {})
    goal("mpwg 2 paths >= 0.9x 1 path, TCP 1 stream", vs.get("tcp1_gbps"), 0.9)
    goal("mpwg 2 paths >= 0.9x 1 path, TCP 4 streams", vs.get("tcp4_gbps"), 0.9)
    goal("mpwg 1 path RTT p99 under load <= the best anchor's", best.get("rtt_p99_ms"), 1.0, False)
    return out


def cell(e, digits=2):
    if not e:
        return "n/a"
    if e["n"] == 1:
        return fmt_num(e["median"], digits)
    return f"{fmt_num(e['median'], digits)} ({fmt_num(e['min'], digits)}–{fmt_num(e['max'], digits)})"


def ratio_cell(v):
    return "n/a" if v is None else f"{v:.2f}×"


def write_markdown(path, meta, configs, results, rg):
    L = []
    L.append(f"# mpwg benchmark, {meta.get('date', '?')}")
    L.append("")
    L.append(f"Machine: {meta.get('cpu_model', '?')}, {meta.get('nproc', '?')} cores, kernel {meta.get('kernel', '?')}.  ")
    L.append(f"Command: `{meta.get('command', '?')}`  ")
    L.append(
        f"{meta.get('rounds')} rounds of {meta.get('duration')} s per test, configurations interleaved within each round; "
        f"median (min–max) over rounds. mpwg {meta.get('mpwg_version', '?')} at {meta.get('git_rev', '?')}"
        f"{' (work tree had local changes)' if meta.get('git_dirty') == '1' else ''}"
        f"{', options `' + meta['mpwg_extra_args'] + '`' if meta.get('mpwg_extra_args') else ', default options'}; "
        f"binary built {meta.get('mpwg_built', '?')} ({meta.get('build', '?')})."
    )
    L.append("")
    L.append("| system | TCP 1 stream Gbit/s | TCP 4 streams Gbit/s | UDP 64 B kpps | UDP 1400 B kpps | CPU s/GB (1 stream) | CPU s/GB (4 streams) | RTT under load p50 / p90 / p99 / max ms |")
    L.append("|---|---|---|---|---|---|---|---|")
    for c in configs:
        cid = c["id"]
        if c["status"] != "ok":
            L.append(f"| {c['label']} | {c['status']}: {c['note']} | | | | | | |")
            continue
        e = results[cid]
        rp = e.get("rtt_pooled_ms")
        rtt = "n/a" if not rp else f"{rp['p50']:.2f} / {rp['p90']:.2f} / {rp['p99']:.2f} / {rp['max']:.2f}"
        loss = e.get("ping_pooled_loss_pct")
        if loss:
            rtt += f" ({loss:.1f}% lost)"
        L.append(
            f"| {c['label']} | {cell(e['tcp1_gbps'])} | {cell(e['tcp4_gbps'])} | {cell(e['udp64_kpps'], 0)} | "
            f"{cell(e['udp1400_kpps'], 0)} | {cell(e['cpu_s_per_gb_tcp1'])} | {cell(e['cpu_s_per_gb_tcp4'])} | {rtt} |"
        )
    L.append("")
    L.append(
        "UDP: IP packet size on the tunnel (payload 36 B and 1372 B), iperf3 `-b 0`, packets per second received. "
        "CPU: utime+stime of both daemons (/proc/PID/stat) per GB of TCP payload received; raw veth has no daemon. "
        "RTT: `ping -i 0.005` through the tunnel while the 1-stream TCP test runs, pooled over rounds in an HdrHistogram."
    )
    labels = {c["id"]: c["label"] for c in configs}

    def rcell(e):
        if not e or e.get("ratio") is None:
            return "n/a"
        c = f"{e['ratio']:.2f}×"
        if e.get("round_min") is not None and len(e.get("rounds", [])) > 1:
            c += f" ({e['round_min']:.2f}–{e['round_max']:.2f})"
        return c

    if rg["best"]:
        L.append("")
        L.append("## The best anchor of this run, figure by figure")
        L.append("")
        L.append("| figure | best anchor | its figure |")
        L.append("|---|---|---|")
        for key, name, higher in METRICS:
            b = rg["best"].get(key) or {}
            if b.get("anchor"):
                L.append(f"| {name} ({'higher' if higher else 'lower'} is better) | {labels.get(b['anchor'], b['anchor'])} | {fmt_num(b['figure'])} |")
            else:
                L.append(f"| {name} | none measured | n/a |")
    if rg["ratios"]:
        L.append("")
        L.append("## Ratios to the best anchor (medians; in brackets the min–max of the per-round ratios)")
        L.append("")
        L.append("| mpwg system | " + " | ".join(name for _, name, _ in METRICS) + " |")
        L.append("|---" * (len(METRICS) + 1) + "|")
        for m, v in rg["ratios"].items():
            L.append(f"| {labels.get(m, m)} | " + " | ".join(rcell(v.get(k)) for k, _, _ in METRICS) + " |")
        L.append("")
        L.append("CPU s/GB and RTT: lower is better, so a ratio under 1 is mpwg ahead.")
    if rg["vs_each"]:
        L.append("")
        L.append("## Ratios to each system (same run)")
        L.append("")
        L.append("| ratio | " + " | ".join(name for _, name, _ in METRICS) + " |")
        L.append("|---" * (len(METRICS) + 1) + "|")
        for k, v in rg["vs_each"].items():
            a, b = k.split("/")
            L.append(f"| {labels.get(a, a)} / {labels.get(b, b)} | " + " | ".join(rcell(v.get(x)) for x, _, _ in METRICS) + " |")
    ce = rg.get("ceiling")
    if ce:
        L.append("")
        L.append("## The box's ceiling (same run)")
        L.append("")
        L.append(
            f"One core seals {ce['seal_gbps']:.1f} and opens {ce['open_gbps']:.1f} Gbit/s of 1420-byte packets "
            f"(examples/crypto_rate.rs, median of the rounds): with both ends on this box, a GB of goodput costs at least "
            f"{ce['crypto_cpu_s_per_gb']:.2f} CPU s of crypto, so crypto alone would stop a tunnel at "
            f"{ce['crypto_only_gbps']:.1f} Gbit/s on {ce['nproc']} cores."
        )
        L.append("")
        L.append("| | TCP 1 stream | TCP 4 streams |")
        L.append("|---|---|---|")
        row = lambda name, k, f: L.append(  # noqa: E731
            f"| {name} | " + " | ".join(f.format(ce[k.format(t)]) if k.format(t) in ce else "n/a" for t in ("tcp1", "tcp4")) + " |"
        )
        row("raw veth TCP: whole machine CPU s per GB", "raw_box_cpu_s_per_gb_{}", "{:.2f}")
        row("ceiling: raw veth's cost + both ends' crypto, Gbit/s", "ceiling_gbps_{}", "{:.2f}")
        row("mpwg 1 path: whole machine CPU s per GB", "m1_box_cpu_s_per_gb_{}", "{:.2f}")
        row("mpwg 1 path as a fraction of the ceiling", "m1_fraction_{}", "{:.0%}")
        row("mpwg 2 paths as a fraction of the ceiling", "m2_fraction_{}", "{:.0%}")
        L.append("")
        L.append(
            "The ceiling is what a tunnel that added only its transport crypto to the kernel's TCP over veth could "
            "carry: a real one also pays the TUN device, UDP and the second trip through veth."
        )
    srv = rg.get("server")
    if srv:
        L.append("")
        L.append("## Server scenario: one mpwg server, N client peers (same run)")
        L.append("")
        L.append("| client peers | TCP up Gbit/s (all clients send) | TCP down Gbit/s (all receive) | server CPU s/GB, up | server CPU s/GB, down | server CPU per GB vs fewest peers, up / down | handshakes/s | server CPU ms per 1000 handshakes |")
        L.append("|---|---|---|---|---|---|---|---|")
        for n, e in srv.items():
            vs = " / ".join(ratio_cell(e.get(f"{t}_cpu_vs_fewest")) for t in ("up", "down"))
            L.append(
                f"| {n} | {cell(e['up_gbps'])} | {cell(e['down_gbps'])} | {cell(e['up_cpu_s_per_gb'])} | "
                f"{cell(e['down_cpu_s_per_gb'])} | {vs} | {cell(e['handshakes_per_s'], 0)} | {cell(e['hs_cpu_s_per_1k'])} |"
            )
        L.append("")
        L.append(
            "Clients alternate mpwg and wireguard-go, one namespace and veth each; up: every client runs iperf3 "
            "to the server at once, down: iperf3 -R. CPU per GB is the server daemon's alone, so at a fixed "
            "packet size it is its CPU per packet. Handshakes: N more peers (examples/handshake_load.rs) each "
            "keep one initiation in flight; a server refuses a peer's initiations closer than 20 ms, so the rate "
            "is capped near 50 per peer and second, and the server's own limit shows only below that."
        )
    if rg["goals"]:
        L.append("")
        L.append("## Goals")
        L.append("")
        L.append("| goal | measured (per-round min–max) | against | met |")
        L.append("|---|---|---|---|")
        for g in rg["goals"]:
            m = "n/a" if g["measured"] is None else f"{g['measured']:.2f}×"
            if g.get("round_min") is not None:
                m += f" ({g['round_min']:.2f}–{g['round_max']:.2f})"
            met = "n/a" if g["met"] is None else ("yes" if g["met"] else "no")
            L.append(f"| {g['goal']} | {m} | {labels.get(g['against'], g['against'] or 'n/a')} | {met} |")
    notes = [n for n in meta.get("notes", "").split(" | ") if n]
    if notes:
        L.append("")
        L.append("## Notes")
        L.append("")
        for n in notes:
            L.append(f"- {n}")
    L.append("")
    with open(path, "w") as f:
        f.write("\n".join(L))


def write_csv(path, configs, results):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["system", "label", "metric", "median", "min", "max", "n", "values"])
        for c in configs:
            e = results.get(c["id"])
            if not e:
                w.writerow([c["id"], c["label"], "status", c["status"], "", "", "", c["note"]])
                continue
            for k, s in e.items():
                if k in ("rtt_pooled_ms",):
                    if s:
                        for q in ("p50", "p90", "p99", "max"):
                            w.writerow([c["id"], c["label"], f"rtt_pooled_{q}_ms", f"{s[q]:.4f}", "", "", s["count"], ""])
                    continue
                if k == "per_round":
                    continue
                if k == "ping_pooled_loss_pct":
                    w.writerow([c["id"], c["label"], k, "" if s is None else f"{s:.3f}", "", "", "", ""])
                    continue
                if s is None:
                    w.writerow([c["id"], c["label"], k, "", "", "", 0, ""])
                else:
                    w.writerow([
                        c["id"], c["label"], k, f"{s['median']:.6g}", f"{s['min']:.6g}", f"{s['max']:.6g}", s["n"],
                        " ".join(f"{v:.6g}" for v in s["values"]),
                    ])


def write_chart(path, meta, configs, results):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [c for c in configs if c["status"] == "ok" and c["id"] != "raw"]
    if not shown:
        return
    names = [c["label"].replace(", ", ",\n", 1) for c in shown]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(15, 6.5))
    x = list(range(len(shown)))
    w = 0.38

    def bars(ax, key, offset, color, label, digits=2):
        meds, lo, hi = [], [], []
        for c in shown:
            s = results[c["id"]].get(key)
            m = s["median"] if s else 0.0
            meds.append(m)
            lo.append(m - s["min"] if s else 0.0)
            hi.append(s["max"] - m if s else 0.0)
        pos = [i + offset for i in x]
        ax.bar(pos, meds, w, color=color, label=label, yerr=[lo, hi], capsize=3, ecolor="#333333")
        for p, m, h in zip(pos, meds, hi):
            if m:
                ax.text(p, m + h, f"{m:.{digits}f}", ha="center", va="bottom", fontsize=8)

    bars(ax1, "tcp1_gbps", -w / 2, "#4C72B0", "TCP, 1 stream")
    bars(ax1, "tcp4_gbps", w / 2, "#55A868", "TCP, 4 streams")
    ax1.set_ylabel("goodput, Gbit/s (median; bars: min–max over rounds)")
    title = "TCP goodput through the tunnel"
    if "raw" in results and results["raw"].get("tcp1_gbps"):
        r1 = results["raw"]["tcp1_gbps"]["median"]
        r4 = results["raw"]["tcp4_gbps"]["median"] if results["raw"].get("tcp4_gbps") else float("nan")
        title += f"\n(ceiling, raw veth without tunnel: {r1:.1f} / {r4:.1f} Gbit/s, off this scale)"
    ax1.set_title(title, fontsize=11)
    ax1.set_xticks(x)
    ax1.set_xticklabels(names, fontsize=8, rotation=20, ha="right")
    ax1.legend(fontsize=9)
    ax1.grid(axis="y", alpha=0.3)

    bars(ax2, "cpu_s_per_gb_tcp1", -w / 2, "#C44E52", "TCP, 1 stream")
    bars(ax2, "cpu_s_per_gb_tcp4", w / 2, "#DD8452", "TCP, 4 streams")
    ax2.set_ylabel("CPU seconds per GB moved, both daemons (lower is better)")
    ax2.set_title("Daemon CPU per GB of TCP payload", fontsize=11)
    ax2.set_xticks(x)
    ax2.set_xticklabels(names, fontsize=8, rotation=20, ha="right")
    ax2.legend(fontsize=9)
    ax2.grid(axis="y", alpha=0.3)

    fig.suptitle(
        f"scripts/bench.sh, {meta.get('date', '')}: {meta.get('nproc', '?')} cores ({meta.get('cpu_model', '?')}), "
        f"{meta.get('rounds')} rounds × {meta.get('duration')} s",
        fontsize=11,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def server_tcp_figure(outdir, n, r, t):
    """Aggregate goodput of one server-scenario TCP test: bytes received over all clients."""
    import glob

    total, secs, got = 0, [], 0
    for f in glob.glob(os.path.join(outdir, "raw", "server", f"n{n}-r{r}-{t}-c*.json")):
        res = iperf_tcp(f)
        if res:
            total += res["bytes"]
            secs.append(res["seconds"])
            got += 1
    if not secs:
        return None
    return {"bytes": total, "seconds": max(secs), "gbps": total * 8 / max(secs) / 1e9, "clients": got}


def server_results(outdir, clk):
    """Per peer count: TCP up/down goodput, the server's CPU s per GB, handshakes/s."""
    rows = read_tsv(os.path.join(outdir, "server.tsv"))
    if not rows:
        return None
    per = {}
    for row in rows:
        if len(row) < 4:
            continue
        n, r, t = int(row[0]), int(row[1]), row[2]
        e = per.setdefault(n, {k: [] for k in (
            "up_gbps", "down_gbps", "up_cpu_s_per_gb", "down_cpu_s_per_gb", "handshakes_per_s", "hs_cpu_s_per_1k")})
        if t in ("up", "down"):
            fig = server_tcp_figure(outdir, n, r, t)
            if not fig:
                continue
            e[f"{t}_gbps"].append(fig["gbps"])
            cpu = int(row[3]) / clk
            e[f"{t}_cpu_s_per_gb"].append(cpu / (fig["bytes"] / 1e9) if fig["bytes"] else None)
        elif t == "hs" and len(row) >= 5:
            kv = dict(x.split("=", 1) for x in row[4].split() if "=" in x)
            try:
                rate, done = float(kv["rate"]), int(kv["handshakes"])
            except (KeyError, ValueError):
                continue
            e["handshakes_per_s"].append(rate)
            if done:
                e["hs_cpu_s_per_1k"].append(int(row[3]) / clk / done * 1000)
    out = {n: {k: stats(v) for k, v in e.items()} for n, e in sorted(per.items())}
    base = out.get(min(out)) if out else None
    for n, e in out.items():
        for t in ("up", "down"):
            a, b = e.get(f"{t}_cpu_s_per_gb"), (base or {}).get(f"{t}_cpu_s_per_gb")
            e[f"{t}_cpu_vs_fewest"] = ratio(a["median"] if a else None, b["median"] if b else None)
    return out


def cmd_server_line(outdir, n, r, t):
    fig = server_tcp_figure(outdir, n, r, t)
    if not fig:
        print("FAILED")
        return
    rows = [x for x in read_tsv(os.path.join(outdir, "server.tsv")) if x[:3] == [n, r, t]]
    try:
        clk = float(os.sysconf("SC_CLK_TCK"))
    except (ValueError, OSError):
        clk = 100.0
    cpu = f", server {int(rows[-1][3]) / clk / (fig['bytes'] / 1e9):.2f} CPU s/GB" if rows and fig["bytes"] else ""
    print(f"{fig['gbps']:.2f} Gbit/s over {fig['clients']} clients{cpu}")


def cmd_final(outdir):
    meta = {}
    for row in read_tsv(os.path.join(outdir, "meta.tsv")):
        if len(row) >= 2:
            meta[row[0]] = row[1] if row[0] != "notes" or "notes" not in meta else meta["notes"] + " | " + row[1]
    configs = []
    for row in read_tsv(os.path.join(outdir, "configs.tsv")):
        row += [""] * (5 - len(row))
        configs.append({"id": row[0], "label": row[1], "status": row[2], "note": row[3], "has_daemon": row[4] == "1"})
    results = collect(outdir, meta, configs)
    rg = ratios_and_goals(results)
    try:
        nproc = int(meta.get("nproc", "2"))
    except ValueError:
        nproc = 2
    rg["ceiling"] = ceiling(results, crypto_ceiling(outdir), nproc)
    rg["server"] = server_results(outdir, float(meta.get("clk_tck", "100")))
    srv = rg["server"]
    if srv and len(srv) > 1:
        most, fewest = max(srv), min(srv)
        worst = max((srv[most].get(f"{t}_cpu_vs_fewest") or 0) for t in ("up", "down")) or None
        rg["goals"].append({
            "goal": f"server: CPU per packet with {most} peers within 10% of {fewest} (worse of TCP up and down)",
            "target": 1.1, "measured": worst, "against": None, "round_min": None, "round_max": None,
            "met": None if worst is None else worst <= 1.1,
        })
    busy, total = 0, 0
    for cid, e in results.items():
        o = e.get("foreign_user_cpu_frac")
        if o:
            busy += sum(1 for v in o["values"] if v > 0.1)
            total += o["n"]
    if total:
        note = (
            f"other load: in {busy} of {total} tests other processes on this shared machine ran more than "
            f"a tenth of a core in user space (foreign_user_cpu_frac in results.json, per test and round)"
        )
        meta["notes"] = (meta.get("notes", "") + " | " + note).strip(" |")
    doc = {
        "meta": meta,
        "configs": configs,
        "results": results,
        "best_anchor": rg["best"],
        "ratios_to_best_anchor": rg["ratios"],
        "ratios": rg["vs_each"],
        "ceiling": rg["ceiling"],
        "server": {str(k): v for k, v in (rg["server"] or {}).items()},
        "goals": rg["goals"],
        "units": {
            "tcp*_gbps": "Gbit/s of TCP payload at the receiver (iperf3 sum_received)",
            "udp*_kpps": "thousands of packets per second received (iperf3 -u -b 0; 64/1400 = IP packet size)",
            "udp*_sent_kpps": "thousands of packets per second the iperf3 client sent",
            "cpu_s_per_gb_*": "utime+stime of both daemons per 1e9 bytes of TCP payload",
            "box_cpu_s_per_gb_*": "busy time of the whole machine (/proc/stat, all CPUs, iperf3 and anything else running included) per 1e9 bytes",
            "cpu_us_per_pkt_*": "utime+stime of both daemons per packet received, microseconds",
            "rtt_*_ms": "ping RTT through the tunnel during the 1-stream TCP test, per round",
            "rtt_pooled_ms": "the same, all rounds pooled in one HdrHistogram",
            "other_cpu_frac": "cores busy outside both daemons, iperf3 and ksoftirqd during a test (machine busy time from /proc/stat minus those): other processes, and softirq work that ran on an otherwise idle CPU",
            "foreign_user_cpu_frac": "cores of user time outside both daemons and iperf3 during a test: other people's processes (builds), the cleanest sign of a disturbed test",
            "softirqd_cpu_frac_tcp1": "cores the ksoftirqd threads used during the 1-stream TCP test (network work deferred out of the processes' own context)",
        },
    }
    with open(os.path.join(outdir, "results.json"), "w") as f:
        json.dump(doc, f, indent=1)
    write_csv(os.path.join(outdir, "results.csv"), configs, results)
    write_markdown(os.path.join(outdir, "results.md"), meta, configs, results, rg)
    try:
        write_chart(os.path.join(outdir, "chart.png"), meta, configs, results)
    except Exception as e:  # the numbers matter more than the picture
        print(f"report.py: chart failed: {e}", file=sys.stderr)


def main(argv):
    if len(argv) >= 3 and argv[1] == "tcp":
        cmd_tcp(argv[2])
    elif len(argv) >= 4 and argv[1] == "udp":
        cmd_udp(argv[2], argv[3])
    elif len(argv) >= 3 and argv[1] == "ping":
        cmd_ping(argv[2])
    elif len(argv) >= 6 and argv[1] == "server-line":
        cmd_server_line(argv[2], argv[3], argv[4], argv[5])
    elif len(argv) >= 3 and argv[1] == "final":
        cmd_final(argv[2])
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

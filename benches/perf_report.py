#!/usr/bin/env python3
"""Markdown tables from a benches/perf-partitions.sh output directory (argument 1).

Ratios are to the HIGHER of the two limit measurements (start and end of the run), so they are
the conservative reading when the virtual disk or loopback varies during the run.
"""

import json
import os
import sys


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def lines(path):
    out = []
    try:
        with open(path) as f:
            for line in f:
                line = line.strip()
                if line:
                    out.append(json.loads(line))
    except OSError:
        pass
    return out


def main():
    out = sys.argv[1]
    limits = lines(os.path.join(out, "limits.jsonl"))
    runs = {r["name"]: r for r in lines(os.path.join(out, "runs.jsonl"))}
    rss = {r["tag"]: r["rss_mib_after"] for r in lines(os.path.join(out, "rss.jsonl"))}
    dd = max((l["dd_mb_s"] for l in limits), default=0)
    ip = max((l["iperf3_mb_s"] for l in limits), default=0)

    print("| limit | " + " | ".join(l["tag"] for l in limits) + " | used for ratios |")
    print("| --- | " + " | ".join("---" for _ in limits) + " | --- |")
    print("| disk: dd bs=1M oflag=direct conv=fdatasync | "
          + " | ".join(f"{l['dd_mb_s']} MB/s" for l in limits) + f" | {dd} MB/s |")
    print("| loopback: iperf3 -c 127.0.0.1 (1 stream) | "
          + " | ".join(f"{l['iperf3_mb_s']} MB/s" for l in limits) + f" | {ip} MB/s |")
    print("| load average (1/5/15 min) | " + " | ".join(l["loadavg"] for l in limits) + " | |")
    print()

    tags = []
    for name in runs:
        if name.endswith("-produce"):
            tags.append(name[: -len("-produce")])

    def summary(tag, kind):
        return load(os.path.join(out, f"{tag}-{kind}", "summary.json"))

    def failed(tag, kind):
        r = runs.get(f"{tag}-{kind}")
        return r is not None and r["rc"] not in (0, 2)

    def pct(v, limit):
        return f"{100 * v / limit:.0f}%" if limit else "?"

    print("| broker | partitions | produce acks=all, max | % of dd | publish p99 at max | "
          "consume (cached backlog) | % of iperf3 | produce+consume max | RSS after | load avg |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for tag in tags:
        broker, _, p = tag.rpartition("-p")
        pr, co, mx = summary(tag, "produce"), summary(tag, "consume"), summary(tag, "mixed")
        cells = [broker, p]
        if pr and not failed(tag, "produce"):
            cells += [f"{pr['produce']['mb_per_s']:.0f} MB/s ({pr['produce']['msg_per_s']:,.0f} msg/s)",
                      pct(pr["produce"]["mb_per_s"], dd),
                      f"{pr['publish_latency_ms']['p99']:.1f} ms"]
        else:
            cells += ["failed", "", ""]
        if co and not failed(tag, "consume"):
            note = "" if co["counts_match"] else " (counts differ)"
            cells += [f"{co['consume']['mb_per_s']:.0f} MB/s{note}", pct(co["consume"]["mb_per_s"], ip)]
        else:
            cells += ["failed", ""]
        if mx and not failed(tag, "mixed"):
            cells.append(f"{mx['produce']['msg_per_s']:,.0f} msg/s")
        else:
            cells.append("failed")
        r = rss.get(tag)
        cells.append(f"{r:.0f} MiB" if isinstance(r, (int, float)) else "?")
        cells.append(runs.get(f"{tag}-produce", {}).get("loadavg", "?").split()[0])
        print("| " + " | ".join(cells) + " |")
    print()

    print("Latency at 25/50/80% of the produce+consume max (ms; publish = intended send to ack, "
          "e2e = intended send to consume):")
    print()
    print("| broker | partitions | % of max | target msg/s | achieved msg/s | publish p50 / p99 / p99.9 | "
          "e2e p50 / p99 / p99.9 | counts |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for tag in tags:
        broker, _, p = tag.rpartition("-p")
        for level in (25, 50, 80):
            s = summary(tag, f"rate{level}")
            if not s:
                continue
            target = s["workload"]["rate"]
            got = s["produce"]["msg_per_s"]
            pl, el = s["publish_latency_ms"], s["e2e_latency_ms"]
            behind = " (behind)" if got < 0.95 * target else ""
            counts = "match" if s["counts_match"] else "differ"
            if failed(tag, f"rate{level}"):
                counts = "timed out"
            print(f"| {broker} | {p} | {level}% | {target:,.0f} | {got:,.0f}{behind} | "
                  f"{pl['p50']:.2f} / {pl['p99']:.1f} / {pl['p99_9']:.1f} | "
                  f"{el['p50']:.2f} / {el['p99']:.1f} / {el['p99_9']:.1f} | {counts} |")
    print()

    k = load(os.path.join(out, "rss-10k.json"))
    if k:
        print(f"Memory, 1 shard, default config: idle RSS {k['idle_rss_mib']} MiB; with 100 topics x "
              f"100 partitions each written to ({k['acked']} messages, {k['create_and_write_s']} s to "
              f"create and write): {k['rss_10k_mib']} MiB; after a restart (listening after "
              f"{k['restart_s']} s): {k['rss_10k_restart_mib']} MiB.")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Turns criterion's results into Rampart's benchmark table (standard library only).

Reads <criterion>/<group>/<function>/new/estimates.json (mean.point_estimate, in ns) and
benchmark.json beside it (the exact group and function names), pairs the Rampart functions of
each group with its peers, and writes

    {"bench": "resilience", "rows": [{"case", "rampart", "peer", "peer_value", "unit": "ns",
                                      "ratio"}], "allocs": {"<group>/<function>": per_op}}

where ratio = peer / rampart (> 1: Rampart is faster). In a group, the functions named `rampart`
or `rampart_*` are Rampart's and the others its peers; a group with no peer (or no function named
after Rampart, such as a breakdown of Rampart's own policies) gives rows with no peer and no ratio.
Allocations per operation come from the `allocs: <case> <n> per operation` lines that the benches
print (pass their logs as arguments).
"""

import argparse
import json
import os
import re
import sys

ALLOCS_LINE = re.compile(r"^allocs: (\S+) ([0-9.]+) per operation")


def read_results(criterion_dir, since):
    """{group: {function: mean_ns}} for every result written at or after `since`."""
    groups = {}
    if not os.path.isdir(criterion_dir):
        return groups
    for root, dirs, files in os.walk(criterion_dir):
        dirs.sort()
        if os.path.basename(root) != "new" or "estimates.json" not in files:
            continue
        estimates = os.path.join(root, "estimates.json")
        if since is not None and os.path.getmtime(estimates) < since:
            continue
        with open(estimates) as f:
            mean = json.load(f)["mean"]["point_estimate"]
        meta_path = os.path.join(root, "benchmark.json")
        group = function = None
        if os.path.exists(meta_path):
            with open(meta_path) as f:
                meta = json.load(f)
            group = meta.get("group_id")
            function = meta.get("function_id")
            if meta.get("value_str"):
                function = f"{function}/{meta['value_str']}" if function else meta["value_str"]
            # A batch of N elements per iteration (criterion's throughput): report per element,
            # so that a contended batch over several threads reads as wall time per call.
            elements = (meta.get("throughput") or {}).get("Elements")
            if elements:
                mean = mean / elements
        if group is None or function is None:
            rel = os.path.relpath(os.path.dirname(root), criterion_dir).split(os.sep)
            group, function = rel[0], "/".join(rel[1:]) or rel[0]
        groups.setdefault(group, {})[function] = mean
    return groups


def read_allocs(logs):
    allocs = {}
    for path in logs:
        try:
            with open(path, errors="replace") as f:
                for line in f:
                    m = ALLOCS_LINE.match(line.strip())
                    if m:
                        allocs[m.group(1)] = float(m.group(2))
        except FileNotFoundError:
            print(f"bench_report: no log {path}", file=sys.stderr)
    return allocs


def is_rampart(function):
    return function == "rampart" or function.startswith("rampart_")


def split_params(groups):
    """`group` with functions `name/param` becomes `group/param` with functions `name`, so that
    Rampart and its peers are compared at the same parameter (threads, tasks)."""
    out = {}
    for group, functions in groups.items():
        for function, value in functions.items():
            if "/" in function:
                name, param = function.split("/", 1)
                out.setdefault(f"{group}/{param}", {})[name] = value
            else:
                out.setdefault(group, {})[function] = value
    return out


def rows_of(groups):
    groups = split_params(groups)
    rows = []
    for group in sorted(groups):
        functions = groups[group]
        ours = sorted((f for f in functions if is_rampart(f)), key=lambda f: (f != "rampart", f))
        peers = sorted(f for f in functions if not is_rampart(f))
        if ours and peers:
            for r in ours:
                case = group if r == "rampart" else f"{group} ({r})"
                for p in peers:
                    rows.append(
                        {
                            "case": case,
                            "rampart": functions[r],
                            "peer": p,
                            "peer_value": functions[p],
                            "unit": "ns",
                            "ratio": functions[p] / functions[r] if functions[r] > 0 else None,
                            "_keys": (f"{group}/{r}", f"{group}/{p}"),
                        }
                    )
        else:
            for f in sorted(functions):
                rows.append(
                    {
                        "case": group if f == "rampart" else f"{group}/{f}",
                        "rampart": functions[f],
                        "peer": None,
                        "peer_value": None,
                        "unit": "ns",
                        "ratio": None,
                        "_keys": (f"{group}/{f}", None),
                    }
                )
    return rows


def fmt_ns(x):
    if x is None:
        return ""
    return f"{x:.1f}" if x < 1000 else f"{x:,.0f}"


def fmt_allocs(allocs, key):
    if key is None or key not in allocs:
        return ""
    return f"{allocs[key]:.2f}"


def markdown(rows, allocs):
    lines = [
        "| case | rampart (ns) | peer | peer (ns) | ratio (peer / rampart) | allocs/op rampart | allocs/op peer |",
        "|---|---:|---|---:|---:|---:|---:|",
    ]
    for row in rows:
        ours, theirs = row["_keys"]
        ratio = "" if row["ratio"] is None else f"{row['ratio']:.2f}"
        lines.append(
            f"| {row['case']} | {fmt_ns(row['rampart'])} | {row['peer'] or ''} | "
            f"{fmt_ns(row['peer_value'])} | {ratio} | {fmt_allocs(allocs, ours)} | "
            f"{fmt_allocs(allocs, theirs)} |"
        )
    lines.append("")
    lines.append(
        "ratio > 1: Rampart is faster. Mean time per call from criterion (for batches over several "
        "threads, wall time divided by the calls of all threads)."
    )
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--criterion", required=True, help="criterion's output directory")
    ap.add_argument("--since", type=float, help="only results written at or after this epoch time")
    ap.add_argument("--json", required=True, help="where to write the JSON table")
    ap.add_argument("--markdown", help="where to write the markdown table too")
    ap.add_argument("--bench", default="resilience", help="the bench name in the JSON")
    ap.add_argument("logs", nargs="*", help="bench logs holding `allocs:` lines")
    args = ap.parse_args()

    groups = read_results(args.criterion, args.since)
    if not groups:
        print(f"bench_report: no criterion results in {args.criterion}", file=sys.stderr)
        return 1
    allocs = read_allocs(args.logs)
    rows = rows_of(groups)
    table = markdown(rows, allocs)
    doc = {
        "bench": args.bench,
        "rows": [{k: v for k, v in row.items() if not k.startswith("_")} for row in rows],
        "allocs": allocs,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(doc, f, indent=2)
        f.write("\n")
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(table + "\n")
    print()
    print(table)
    print()
    print(f"bench_report: wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""The import graph between the broker crate's top-level modules, and its cycles.

Reads src/ (or the directory given): an edge A -> B for every `crate::B` path written in a
file of module A (`use` lines and inline paths; comments and `#[cfg(test)] mod tests` blocks at
the end of a file are left out). Prints the edges with their counts, then the strongly
connected components with more than one module (the cycles). Issue 11 tracks these.

    python3 tests/module_graph.py [src] [--why A B]

`--why A B` lists the lines that make the edge A -> B.
"""
import os
import re
import sys

root = "src"
why = None
args = sys.argv[1:]
if "--why" in args:
    i = args.index("--why")
    why = (args[i + 1], args[i + 2])
    del args[i : i + 3]
if args:
    root = args[0]

PATH = re.compile(r"\bcrate::([a-z_][a-z0-9_]*)")
GROUP = re.compile(r"\buse crate::\{([^;]*)\}", re.S)


def top_module(path):
    rel = os.path.relpath(path, root)
    first = rel.split(os.sep)[0]
    return first[:-3] if first.endswith(".rs") else first


def non_test_code(text):
    cut = re.search(r"^#\[cfg\(test\)\]\s*\n\s*mod tests\b", text, re.M)
    if cut:
        text = text[: cut.start()]
    # Line comments (doc comments included); good enough for `crate::` paths.
    return "\n".join(line.split("//")[0] for line in text.splitlines())


edges = {}
lines = {}
for dirpath, _, files in os.walk(root):
    for f in files:
        if not f.endswith(".rs"):
            continue
        path = os.path.join(dirpath, f)
        a = top_module(path)
        if a in ("lib", "main"):
            continue
        code = non_test_code(open(path, encoding="utf-8").read())
        targets = PATH.findall(code)
        for group in GROUP.findall(code):
            targets += re.findall(r"(?:^|,)\s*([a-z_][a-z0-9_]*)", group)
        for b in targets:
            if b == a or b in ("self",):
                continue
            edges[(a, b)] = edges.get((a, b), 0) + 1
        if why:
            for n, line in enumerate(code.splitlines(), 1):
                if a == why[0] and re.search(r"\bcrate::" + why[1] + r"\b", line):
                    lines.setdefault((a, why[1]), []).append(f"{path}:{n}: {line.strip()}")

if why:
    for line in lines.get(why, []):
        print(line)
    sys.exit(0)

nodes = sorted({n for e in edges for n in e})
succ = {n: sorted(b for (a, b) in edges if a == n) for n in nodes}
print("edges (count of crate:: paths):")
for n in nodes:
    if succ[n]:
        print(f"  {n} -> " + ", ".join(f"{b}({edges[(n, b)]})" for b in succ[n]))

# Tarjan's strongly connected components.
index, low, stack, on, sccs, counter = {}, {}, [], set(), [], [0]


def visit(v):
    index[v] = low[v] = counter[0]
    counter[0] += 1
    stack.append(v)
    on.add(v)
    for w in succ[v]:
        if w not in index:
            visit(w)
            low[v] = min(low[v], low[w])
        elif w in on:
            low[v] = min(low[v], index[w])
    if low[v] == index[v]:
        comp = []
        while True:
            w = stack.pop()
            on.discard(w)
            comp.append(w)
            if w == v:
                break
        sccs.append(sorted(comp))


sys.setrecursionlimit(10000)
for n in nodes:
    if n not in index:
        visit(n)
cycles = [c for c in sccs if len(c) > 1]
print(f"cycles: {len(cycles)}")
for c in cycles:
    print(f"  {len(c)} modules: " + " ".join(c))

#!/usr/bin/env python3
"""Prints the module graph of src/ and checks the shape rules of ARCHITECTURE.md.

    scripts/modgraph.py            # the graph, then the checks; exit 1 if one fails
    scripts/modgraph.py --dot      # the top-level graph in Graphviz dot, nothing else

What it reads: every `crate::a::b` path in the code of each file under src/ (comments
and doc comments are left out, so an intra-doc link is not an import). A file's
module is its path: src/protocol/device/send.rs is protocol::device::send.

The checks:
  * the top-level modules (folders and files of src/, besides main.rs and lib.rs) number
    10 or fewer;
  * each imports only the layers below it, in this order (top first):
        daemon, control, datapath, protocol, multipath, io
    so there is no cycle between them;
  * inside a folder, its modules have no import cycle;
  * no .rs file in src/ has more than 900 lines;
  * `unsafe` appears only under src/io/;
  * every src/ (and tests/, scripts/) path ARCHITECTURE.md names exists.
It needs nothing but Python 3.
"""
import os
import re
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")
LAYERS = ["daemon", "control", "datapath", "protocol", "multipath", "io"]
MAX_LINES = 900
MAX_TOP = 10

PATH_RE = re.compile(r"\bcrate((?:::[a-z_][a-z0-9_]*)+)")
USE_GROUP_RE = re.compile(r"\buse\s+crate::\{")


def strip_comments(text):
    """The code of a Rust file without // comments and string contents (approximate,
    and enough for this: string literals rarely hold `crate::`)."""
    out = []
    for line in text.split("\n"):
        # Drop everything from a `//` that is not inside a string literal.
        in_str = False
        cut = len(line)
        i = 0
        while i < len(line):
            c = line[i]
            if c == '"' and (i == 0 or line[i - 1] != "\\"):
                in_str = not in_str
            elif not in_str and line.startswith("//", i):
                cut = i
                break
            i += 1
        out.append(line[:cut])
    return "\n".join(out)


def module_of(rel):
    """protocol/device/mod.rs -> ['protocol', 'device']; daemon.rs -> ['daemon']."""
    parts = rel[:-3].split(os.sep)
    if parts[-1] == "mod":
        parts = parts[:-1]
    return parts


def main():
    dot = "--dot" in sys.argv
    files = []
    for dirpath, _, names in os.walk(ROOT):
        for n in sorted(names):
            if n.endswith(".rs"):
                files.append(os.path.relpath(os.path.join(dirpath, n), ROOT))
    files.sort()

    problems = []
    top_edges = {}  # (a, b) -> first file that makes the edge
    inner_edges = {}  # folder -> {(a, b)}
    tops = set()
    for rel in files:
        mod = module_of(rel)
        if mod[0] in ("main", "lib"):
            continue
        tops.add(mod[0])
        with open(os.path.join(ROOT, rel)) as f:
            text = f.read()
        lines = text.count("\n") + (0 if text.endswith("\n") else 1)
        if lines > MAX_LINES:
            problems.append(f"src/{rel} has {lines} lines (more than {MAX_LINES})")
        code = strip_comments(text)
        if USE_GROUP_RE.search(code):
            problems.append(f"src/{rel}: `use crate::{{...}}` hides imports from this script; name each path")
        if re.search(r"\bunsafe\b", code) and mod[0] != "io":
            problems.append(f"src/{rel} has `unsafe` outside src/io/")
        for m in PATH_RE.finditer(code):
            target = m.group(1).split("::")[1:]
            if not target:
                continue
            if target[0] != mod[0]:
                top_edges.setdefault((mod[0], target[0]), rel)
            elif len(mod) >= 2 and len(target) >= 2 and target[1] != mod[1]:
                # Within one folder: sibling modules of the folder's first level.
                inner_edges.setdefault(mod[0], {}).setdefault((mod[1], target[1]), rel)

    if dot:
        print("digraph mpwg {")
        for a, b in sorted(top_edges):
            print(f'  "{a}" -> "{b}";')
        print("}")
        return 0

    print("Top-level modules of src/ and what each imports:")
    for t in sorted(tops, key=lambda x: LAYERS.index(x) if x in LAYERS else -1):
        deps = sorted({b for (a, b) in top_edges if a == t},
                      key=lambda x: LAYERS.index(x) if x in LAYERS else -1)
        print(f"  {t:10} -> {', '.join(deps) if deps else '(nothing)'}")
    for folder in sorted(inner_edges):
        print(f"Inside {folder}/:")
        edges = inner_edges[folder]
        for a in sorted({a for (a, _) in edges}):
            deps = sorted({b for (x, b) in edges if x == a})
            print(f"  {a:12} -> {', '.join(deps)}")

    if len(tops) > MAX_TOP:
        problems.append(f"{len(tops)} top-level modules (more than {MAX_TOP}): {sorted(tops)}")
    for t in tops:
        if t not in LAYERS:
            problems.append(f"top-level module {t} is not in the layer order {LAYERS}")
    for (a, b), rel in sorted(top_edges.items()):
        if a in LAYERS and b in LAYERS and LAYERS.index(b) <= LAYERS.index(a):
            problems.append(f"{a} imports {b}, a layer above it (first in src/{rel})")
    for folder, edges in sorted(inner_edges.items()):
        cycle = find_cycle({k for k in edges})
        if cycle:
            problems.append(f"import cycle inside {folder}/: {' -> '.join(cycle)}")

    arch = os.path.join(ROOT, "..", "ARCHITECTURE.md")
    if os.path.exists(arch):
        with open(arch) as f:
            named = set(re.findall(r"\b((?:src|tests|scripts)/[A-Za-z0-9_./-]*[A-Za-z0-9_/])", f.read()))
        for n in sorted(named):
            if not os.path.exists(os.path.join(ROOT, "..", n)):
                problems.append(f"ARCHITECTURE.md names {n}, which does not exist")
    else:
        problems.append("ARCHITECTURE.md is missing")

    print()
    if problems:
        for p in problems:
            print(f"FAIL: {p}")
        return 1
    print(f"OK: {len(tops)} top-level modules, imports only downward, no cycle inside a "
          f"folder, no file over {MAX_LINES} lines, unsafe only in src/io/, "
          f"ARCHITECTURE.md names only paths that exist")
    return 0


def find_cycle(edges):
    graph = {}
    for a, b in edges:
        graph.setdefault(a, set()).add(b)
    state = {}
    stack = []

    def visit(n):
        state[n] = 1
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state:
                c = visit(m)
                if c:
                    return c
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state:
            c = visit(n)
            if c:
                return c
    return None


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Import cycles in Rust crates' src/ trees, at two levels:

  * between the top-level modules of a crate (`crate::a` paths), and
  * between the files and subfolders of each folder (`super::a` and `crate::folder::a`
    paths), which a crate-level check cannot see.

Inline `#[cfg(test)]` modules, `tests.rs` files and `src/bin/` are left out: tests may
reach anywhere. Prints each cycle; exits 1 if there is any.

    scripts/modcycles.py SRC_DIR...
"""
import os
import re
import sys
from collections import defaultdict


def code(path):
    text = open(path, encoding="utf-8", errors="replace").read()
    return re.split(r"#\[cfg\(test\)\]", text)[0]


def sources(src):
    for root, dirs, files in os.walk(src):
        dirs[:] = [d for d in dirs if d != "bin"]
        for f in files:
            if f.endswith(".rs") and f != "tests.rs":
                yield root, f


def cycles(edges, nodes):
    """Strongly connected components of more than one node (Tarjan)."""
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(10000)
    for v in sorted(nodes):
        if v not in index:
            visit(v)
    return found


def crate_level(src):
    edges, nodes = defaultdict(set), set()
    for root, f in sources(src):
        rel = os.path.relpath(os.path.join(root, f), src)[:-3].split(os.sep)
        if rel[-1] in ("mod", "lib", "main"):
            rel = rel[:-1]
        if not rel:
            continue
        module = rel[0]
        nodes.add(module)
        text = code(os.path.join(root, f))
        targets = set(re.findall(r"crate::([a-z_][a-z0-9_]*)", text))
        for group in re.findall(r"use crate::\{([^}]*)\}", text):
            targets.update(re.findall(r"(?:^|,)\s*([a-z_][a-z0-9_]*)", group))
        edges[module].update(t for t in targets if t != module)
    return cycles(edges, nodes)


def folder_level(src):
    found = []
    for root, dirs, files in os.walk(src):
        dirs[:] = [d for d in dirs if d != "bin"]
        members = [f[:-3] for f in files if f.endswith(".rs") and f not in ("mod.rs", "lib.rs", "main.rs", "tests.rs")]
        members += dirs
        if len(members) < 2:
            continue
        folder = os.path.relpath(root, src).replace(os.sep, "::")
        edges = defaultdict(set)
        for member in members:
            file = os.path.join(root, member + ".rs")
            paths = [file] if os.path.exists(file) else [
                os.path.join(r, f) for r, _, fs in os.walk(os.path.join(root, member)) for f in fs if f.endswith(".rs") and f != "tests.rs"
            ]
            for path in paths:
                text = code(path)
                up = "super::" * (os.path.relpath(path, root).count(os.sep) + 1)
                for other in members:
                    if other == member:
                        continue
                    name = re.escape(other)
                    if (re.search(re.escape(up) + name + r"\b", text)
                            or re.search(re.escape(up) + r"\{[^}]*\b" + name + r"\b", text)
                            or (folder != "." and re.search(r"crate::" + re.escape(folder) + "::" + name + r"\b", text))):
                        edges[member].add(other)
        found += [[f"{folder}::{m}" for m in c] for c in cycles(edges, members)]
    return found


def main():
    total = 0
    for src in sys.argv[1:]:
        for kind, found in (("modules", crate_level(src)), ("files", folder_level(src))):
            for cycle in found:
                print(f"{src}: cycle among {kind}: {' <-> '.join(cycle)}")
            total += len(found)
    print(f"{total} cycle(s) in {', '.join(sys.argv[1:])}")
    return 1 if total else 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Prints the module graph of src/ (who uses whom, by `crate::…` paths) and its import circles.

A module is a top-level file or directory of src/ (`stages`, `verify`, `pipeline`, …) or, with
`--depth 2`, one level below (`stages::planner`, `dest::keys`, …). An edge A → B means a file of A
names `crate::B…` (in a `use`, a path in code, or a `pub use`), `super::…` paths resolved too. Tests
(`#[cfg(test)]` modules, inline or in their own file) are left out: they may reach anywhere. The
circles are the graph's strongly connected components with more than one module.

    python3 scripts/import_graph.py [--depth 1|2] [--edges] [--check]

`--check` exits 1 when there is any circle (scripts/test.sh runs it, so none comes back).
"""
import os
import re
import sys

SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")


def module_of(path, depth):
    rel = os.path.relpath(path, SRC)[:-3].split(os.sep)
    if rel[-1] in ("mod", "lib", "main"):
        rel = rel[:-1]
    if not rel:
        return None
    return "::".join(rel[:depth])


def file_mod_path(path):
    rel = os.path.relpath(path, SRC)[:-3].split(os.sep)
    if rel[-1] in ("mod", "lib", "main"):
        rel = rel[:-1]
    return rel


def strip_tests(text):
    """Drops `#[cfg(test)] mod x { … }` blocks (brace matched) and comments."""
    text = re.sub(r"//[^\n]*", "", text)
    out, i = [], 0
    for m in re.finditer(r"#\[cfg\(test\)\]\s*(pub(\([^)]*\))?\s+)?mod\s+\w+\s*\{", text):
        if m.start() < i:
            continue
        out.append(text[i : m.start()])
        depth, j = 1, m.end()
        while j < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            j += 1
        i = j
    out.append(text[i:])
    return "".join(out)


def targets(text, self_path):
    """Every module path this text names: `crate::a::b`, `super::x`, and `use crate::{a, b::c}`."""
    found = []
    # brace groups directly after crate:: (use crate::{a::X, b})
    for m in re.finditer(r"\bcrate::\{", text):
        depth, j = 1, m.end()
        while j < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            j += 1
        inner = text[m.end() : j - 1]
        # top-level items of the group
        lvl, cur, items = 0, "", []
        for ch in inner:
            if ch == "{":
                lvl += 1
            elif ch == "}":
                lvl -= 1
            if ch == "," and lvl == 0:
                items.append(cur)
                cur = ""
            else:
                cur += ch
        items.append(cur)
        for it in items:
            seg = re.findall(r"[A-Za-z_][A-Za-z0-9_]*", it)
            if seg:
                found.append(seg[:2])
    for m in re.finditer(r"\bcrate::((?:[A-Za-z_][A-Za-z0-9_]*::)*[A-Za-z_][A-Za-z0-9_]*)", text):
        found.append(m.group(1).split("::")[:2])
    for m in re.finditer(r"\bsuper::((?:[A-Za-z_][A-Za-z0-9_]*::)*[A-Za-z_][A-Za-z0-9_]*)", text):
        base = self_path[:-1]
        found.append((base + m.group(1).split("::"))[:2])
    return found


def test_files(files):
    """Files that are `#[cfg(test)] mod x;` of their parent (`x.rs` or `x/mod.rs` beside it, or in the
    parent's own folder when the parent is a `mod.rs`)."""
    out = set()
    for f in files:
        text = open(f, encoding="utf-8").read()
        base = os.path.dirname(f)
        if os.path.basename(f) not in ("mod.rs", "lib.rs", "main.rs"):
            base = os.path.join(base, os.path.basename(f)[:-3])
        for m in re.finditer(r"#\[cfg\(test\)\]\s*(?:pub(?:\([^)]*\))?\s+)?mod\s+(\w+)\s*;", text):
            out.add(os.path.normpath(os.path.join(base, m.group(1) + ".rs")))
            out.add(os.path.normpath(os.path.join(base, m.group(1), "mod.rs")))
    return out


def build(depth):
    files = []
    for root, _, names in os.walk(SRC):
        for n in names:
            if n.endswith(".rs"):
                files.append(os.path.join(root, n))
    tests = test_files(files)
    files = [f for f in files if os.path.normpath(f) not in tests]
    mods = {module_of(f, depth) for f in files} - {None}
    edges = {}
    for f in files:
        a = module_of(f, depth)
        if a is None:
            continue
        text = strip_tests(open(f, encoding="utf-8").read())
        for segs in targets(text, file_mod_path(f)):
            for k in (depth, 1):
                cand = "::".join(segs[:k])
                if cand in mods:
                    break
            else:
                continue
            if cand != a and not a.startswith(cand + "::"):
                edges.setdefault(a, set()).add(cand)
    return sorted(mods), edges


def sccs(nodes, edges):
    index, low, stack, on, out, n = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = n[0]
        n[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(edges.get(v, ())):
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
            out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in nodes:
        if v not in index:
            visit(v)
    return [c for c in out if len(c) > 1]


def main():
    depth = 2 if "--depth" in sys.argv and sys.argv[sys.argv.index("--depth") + 1] == "2" else 1
    nodes, edges = build(depth)
    if "--edges" in sys.argv or depth == 1:
        print(f"# module graph (depth {depth}): A -> B means A uses crate::B")
        for a in nodes:
            if edges.get(a):
                print(f"{a} -> {', '.join(sorted(edges[a]))}")
    circles = sccs(nodes, edges)
    print(f"# import circles (depth {depth}): {len(circles)}")
    for c in sorted(circles, key=lambda c: (-len(c), c)):
        print(f"  [{len(c)}] {' '.join(c)}")
    if "--check" in sys.argv and circles:
        print("import circles found: break them (see docs/ARCHITECTURE.md, \"Who imports whom\")", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

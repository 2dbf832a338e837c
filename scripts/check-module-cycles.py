#!/usr/bin/env python3
"""Fails when the modules of a crate import each other in a circle.

For every crate under crates/ and daemon/, each top-level module (a file
src/NAME.rs, or src/NAME/ with its files) is a node; a `crate::OTHER`
path anywhere in its code (a `use`, or an inline path) is an edge. Tests
(`#[cfg(test)]` modules in their own files, `tests.rs`) are left out: a
test may reach anywhere. Prints every circle found, exits 1 if any.
"""
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PATH = re.compile(r"\bcrate::([a-z_][a-z0-9_]*)")
USE_GROUP = re.compile(r"\buse\s+crate::\{([^;]*)\};", re.S)


def modules(src):
    """Top-level module name -> list of its files."""
    out = {}
    for name in os.listdir(src):
        p = os.path.join(src, name)
        if name.endswith(".rs") and name not in ("lib.rs", "main.rs", "tests.rs"):
            out.setdefault(name[:-3], []).append(p)
        elif os.path.isdir(p):
            for d, _, files in os.walk(p):
                for f in files:
                    if f.endswith(".rs") and f != "tests.rs":
                        out.setdefault(name, []).append(os.path.join(d, f))
    return out


def strip_tests(text):
    """Drops `#[cfg(test)] mod tests { ... }` blocks and comments."""
    text = re.sub(r"//[^\n]*", "", text)
    out, i = [], 0
    for m in re.finditer(r"#\[cfg\(test\)\]\s*mod\s+\w+\s*\{", text):
        if m.start() < i:
            continue
        out.append(text[i:m.start()])
        depth, j = 1, m.end()
        while j < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            j += 1
        i = j
    out.append(text[i:])
    return "".join(out)


def edges(files, names):
    found = set()
    for f in files:
        text = strip_tests(open(f, encoding="utf-8").read())
        for m in PATH.finditer(text):
            found.add(m.group(1))
        for g in USE_GROUP.finditer(text):
            for part in re.split(r"[,\s]+", g.group(1)):
                head = part.split("::")[0].strip("{} ")
                if head:
                    found.add(head)
    return {n for n in found if n in names}


def cycles(graph):
    seen, stack, on, out = set(), [], set(), []

    def visit(n):
        seen.add(n)
        stack.append(n)
        on.add(n)
        for m in sorted(graph[n]):
            if m in on:
                out.append(stack[stack.index(m):] + [m])
            elif m not in seen:
                visit(m)
        stack.pop()
        on.discard(n)

    for n in sorted(graph):
        if n not in seen:
            visit(n)
    return out


def main():
    crates = [os.path.join(ROOT, "crates", c) for c in sorted(os.listdir(os.path.join(ROOT, "crates")))]
    crates.append(os.path.join(ROOT, "daemon"))
    bad = 0
    for c in crates:
        src = os.path.join(c, "src")
        if not os.path.isdir(src):
            continue
        mods = modules(src)
        graph = {n: edges(fs, mods) - {n} for n, fs in mods.items()}
        for cyc in cycles(graph):
            bad += 1
            print(f"{os.path.relpath(c, ROOT)}: import circle {' -> '.join(cyc)}")
    if bad:
        print(f"{bad} import circle(s); break them with a leaf module (docs/ARCHITECTURE.md)")
        return 1
    print("no import circles among the modules of any crate")
    return 0


if __name__ == "__main__":
    sys.exit(main())

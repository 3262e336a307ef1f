#!/usr/bin/env python3
"""Lists import cycles between the modules of each crate of the workspace.

A module's imports are the `crate::...` and `super::...` paths its file names (in `use`
declarations and in code). An edge goes from a module to the module it names; a module naming its
own ancestor or descendant is not counted (a parent and its children are one idea by
construction). Prints every cycle found and exits 1 if there is one.
"""
import pathlib
import re
import sys

root = pathlib.Path(__file__).resolve().parent.parent


def modules(src):
    """Module path (tuple) of every .rs file under a crate's src."""
    out = {}
    for f in src.rglob("*.rs"):
        rel = f.relative_to(src).with_suffix("")
        parts = list(rel.parts)
        if parts in (["lib"], ["main"]):
            parts = []
        elif parts[-1] == "mod":
            parts = parts[:-1]
        out[tuple(parts)] = f
    return out


def strip_tests(text):
    """Drops `#[cfg(test)] mod tests { ... }` blocks (tests may import anything)."""
    i = text.find("#[cfg(test)]")
    return text if i < 0 else text[:i]


def targets(mod, text, known):
    found = set()
    # Comments name modules without importing them.
    text = "\n".join(line.split("//", 1)[0] for line in text.splitlines())
    for m in re.finditer(r"\b(crate|super)((?:::\w+)+)", text):
        base = [] if m.group(1) == "crate" else list(mod[:-1])
        path = base + m.group(2).split("::")[1:]
        # The longest known module prefix of the path.
        for n in range(len(path), 0, -1):
            if tuple(path[:n]) in known:
                found.add(tuple(path[:n]))
                break
    return found


def related(a, b):
    return a[: len(b)] == b or b[: len(a)] == a


failed = False
for crate in sorted((root / "crates").iterdir()):
    src = crate / "src"
    if not src.is_dir():
        continue
    known = modules(src)
    graph = {m: set() for m in known}
    for mod, f in known.items():
        for t in targets(mod, strip_tests(f.read_text()), known):
            if not related(mod, t):
                graph[mod].add(t)
    # Cycles by depth-first search.
    state, stack, cycles = {}, [], set()

    def visit(m):
        state[m] = 1
        stack.append(m)
        for t in graph[m]:
            if state.get(t) == 1:
                cycle = stack[stack.index(t):]
                cycles.add(tuple(sorted("::".join(c) or "crate" for c in cycle)))
            elif t not in state:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in graph:
        if m not in state:
            visit(m)
    for c in sorted(cycles):
        failed = True
        print(f"{crate.name}: import cycle between {', '.join(c)}")
print("module import cycles: " + ("found" if failed else "none"))
sys.exit(1 if failed else 0)

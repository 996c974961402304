#!/usr/bin/env bash
# Fails when x86-specific code is reachable on another architecture without a cfg guard, so
# tunekit keeps building on aarch64 (Apple Silicon, Graviton) although no aarch64 standard
# library can be installed here to try it (issue 23, part 2).
#
#   scripts/check-cfg-guard.sh [ROOT]     # ROOT: the workspace (default: this repository)
#
# Static analysis of every .rs file under ROOT/crates (comments and string literals ignored):
#   - `std::arch::x86_64`, `core::arch::x86_64`, `asm!`, `global_asm!`,
#     `is_x86_feature_detected!` and `target_feature(enable` must sit under
#     `cfg(target_arch = "x86_64")` (not inside `not(..)` or `any(..)`),
#   - `arch_prctl` (AMX's permission request) also under `target_os = "linux"`.
# A use is guarded when the cfg is on the module: an attribute on its `mod x;` declaration (in
# any ancestor module, followed file to file) or an inner `#![cfg(..)]` at the file's top; or
# on the code around it: an attribute on an enclosing item or block (`#[cfg(..)] { .. }`,
# `#[cfg(..)] fn ..`, `#[cfg(..)] mod tests { .. }`) or on the statement itself
# (`#[cfg(..)] use std::arch::x86_64::*;`).
# Prints each unguarded use as FILE:LINE: TOKEN and exits 1; exits 0 when there is none.
set -euo pipefail
ROOT="${1:-$(cd "$(dirname "$0")/.." && pwd)}"
exec python3 - "$ROOT" <<'PY'
import os
import re
import sys

root = os.path.realpath(sys.argv[1])  # normalised: module paths are compared as strings
TOKENS = [
    (re.compile(r"\b(?:std|core)\s*::\s*arch\s*::\s*x86_64\b"), "std::arch::x86_64", False),
    (re.compile(r"\b(?:global_)?asm\s*!"), "asm!", False),
    (re.compile(r"\bis_x86_feature_detected\s*!"), "is_x86_feature_detected!", False),
    (re.compile(r"\btarget_feature\s*\(\s*enable"), "target_feature(enable", False),
    (re.compile(r"arch_prctl\b"), "arch_prctl", True),
]


def strip(src):
    """Comments and the contents of string/char literals blanked (newlines kept), so that
    offsets and line numbers stay those of the source. The cfg strings stay readable: only
    literals outside attributes are blanked."""
    out = list(src)
    i, n = 0, len(src)
    in_attr = 0  # bracket depth inside `#[..]` / `#![..]`

    def blank(a, b):
        for j in range(a, b):
            if out[j] != "\n":
                out[j] = " "

    attr_stack = []
    while i < n:
        c = src[i]
        if src.startswith("//", i):
            j = src.find("\n", i)
            j = n if j < 0 else j
            blank(i, j)
            i = j
        elif src.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if src.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif src.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            blank(i, j)
            i = j
        elif c == "r" and re.match(r'r#*"', src[i:i + 10]) and not re.match(r"\w", src[i - 1] if i else " "):
            m = re.match(r'r(#*)"', src[i:])
            end = src.find('"' + m.group(1), i + len(m.group(0)))
            end = n if end < 0 else end + 1 + len(m.group(1))
            if not attr_stack:
                blank(i, end)
            i = end
        elif c == '"':
            j = i + 1
            while j < n and src[j] != '"':
                j += 2 if src[j] == "\\" else 1
            if not attr_stack:
                blank(i, j + 1)
            i = j + 1
        elif c == "'":
            m = re.match(r"'(?:\\.|\\u\{[0-9a-fA-F]+\}|\\x[0-9a-fA-F]{2}|[^\\'])'", src[i:])
            if m:
                blank(i, i + len(m.group(0)))
                i += len(m.group(0))
            else:
                i += 1  # a lifetime
        elif c == "#" and re.match(r"#!?\s*\[", src[i:]):
            j = src.index("[", i)
            attr_stack.append(1)
            i = j + 1
            # Scan to the matching `]`, keeping the text.
            depth = 1
            while i < n and depth:
                if src[i] == "[":
                    depth += 1
                elif src[i] == "]":
                    depth -= 1
                elif src[i] == '"':
                    j = i + 1
                    while j < n and src[j] != '"':
                        j += 2 if src[j] == "\\" else 1
                    i = j
                i += 1
            attr_stack.pop()
        else:
            i += 1
    return "".join(out)


ATTR = re.compile(r"#\s*\[\s*cfg\s*\((.*?)\)\s*\]", re.S)
INNER = re.compile(r"#\s*!\s*\[\s*cfg\s*\((.*?)\)\s*\]", re.S)


def guards(cfg_text):
    """(x86_64, linux) that a cfg expression guarantees."""
    t = re.sub(r"\s+", "", cfg_text)
    if "not(" in t or "any(" in t:
        return (False, False)
    return ('target_arch="x86_64"' in t, 'target_os="linux"' in t)


def attrs_guard(text):
    x86 = linux = False
    for m in ATTR.finditer(text):
        a, b = guards(m.group(1))
        x86, linux = x86 or a, linux or b
    return x86, linux


files = []
for base, dirs, names in os.walk(os.path.join(root, "crates")):
    dirs[:] = [d for d in dirs if d not in ("target", ".git")]
    files += [os.path.join(base, f) for f in names if f.endswith(".rs")]
files.sort()
text = {}
for f in files:
    with open(f, encoding="utf-8") as fh:
        text[f] = strip(fh.read())

# Module guards: file -> (x86, linux) guaranteed by its `mod` declaration or inner attribute.
MOD = re.compile(r"((?:#\s*\[[^\]]*\]\s*)*)(?:pub(?:\s*\([^)]*\))?\s+)?mod\s+(\w+)\s*;")
PATH = re.compile(r'#\s*\[\s*path\s*=\s*"([^"]+)"\s*\]')
decl = {}  # child file -> (parent file, (x86, linux))
for f in files:
    stem = os.path.splitext(os.path.basename(f))[0]
    d = os.path.dirname(f)
    sub = d if stem in ("mod", "lib", "main") else os.path.join(d, stem)
    for m in MOD.finditer(text[f]):
        attrs, name = m.group(1), m.group(2)
        p = PATH.search(attrs)
        cands = [os.path.join(d, p.group(1))] if p else [
            os.path.join(sub, name + ".rs"), os.path.join(sub, name, "mod.rs")]
        for c in cands:
            c = os.path.normpath(c)
            if c in text:
                decl[c] = (f, attrs_guard(attrs))


def file_guard(f, seen=()):
    x86 = linux = False
    for m in INNER.finditer(text[f][:2000]):
        a, b = guards(m.group(1))
        x86, linux = x86 or a, linux or b
    if f in decl and f not in seen:
        parent, (a, b) = decl[f]
        pa, pb = file_guard(parent, seen + (f,))
        x86, linux = x86 or a or pa, linux or b or pb
    return x86, linux


def scope_guard(src, pos):
    """Guards from attributes on the enclosing items/blocks and the statement at `pos`."""
    x86 = linux = False
    # The statement or item containing pos: back to the previous `;`, `{` or `}` at depth 0.
    depth, i, start_of_stmt = 0, pos, None
    opens = []
    while i > 0:
        i -= 1
        c = src[i]
        if c in ")]":
            depth += 1
        elif c in "([":
            depth -= 1
        if c == "}":
            # Skip the whole balanced block.
            level, j = 1, i
            while j > 0 and level:
                j -= 1
                if src[j] == "}":
                    level += 1
                elif src[j] == "{":
                    level -= 1
            if start_of_stmt is None and depth <= 0:
                # A finished item before us at this level: the statement starts after it,
                # unless this block is part of our statement (e.g. `if .. {} else {}`).
                pass
            i = j
            continue
        if c == "{":
            opens.append(i)
    # For each enclosing `{`, the text of the item header before it (back to `;`, `{`, `}`).
    heads = []
    for o in opens:
        j = o
        while j > 0 and src[j - 1] not in ";{}":
            j -= 1
        heads.append(src[j:o])
    # The statement itself.
    j = pos
    while j > 0 and src[j - 1] not in ";{}":
        j -= 1
    heads.append(src[j:pos])
    for h in heads:
        a, b = attrs_guard(h)
        x86, linux = x86 or a, linux or b
    return x86, linux


bad = []
for f in files:
    src = text[f]
    fx, fl = file_guard(f)
    for rx, name, needs_linux in TOKENS:
        for m in rx.finditer(src):
            sx, sl = (fx, fl)
            if not (sx and (sl or not needs_linux)):
                a, b = scope_guard(src, m.start())
                sx, sl = sx or a, sl or b
            if not sx or (needs_linux and not sl):
                line = src.count("\n", 0, m.start()) + 1
                want = 'target_arch = "x86_64"' + (', target_os = "linux"' if needs_linux else "")
                bad.append(f"{os.path.relpath(f, root)}:{line}: {name} without cfg({want})")
for b in bad:
    print(b)
if bad:
    print(f"{len(bad)} unguarded x86-specific use(s)", file=sys.stderr)
    sys.exit(1)
print(f"cfg guard: {len(files)} files checked, every x86-specific use is behind its cfg")
PY

#!/usr/bin/env python3
"""Check (or rewrite) tests/vz-sdk/selectors.tsv against Apple's SDK metadata.

The metadata is Code-Hex/vz's cmd/vzbridgegen/metadata/sdk.json (Apple's
Virtualization.framework and Foundation headers, extracted by clang). For
every class and method row of the table, the arm64 target's record gives the
superclass, the return and argument types and the macOS version it arrived
in; this prints every difference and exits 1 if there is one. With --write
it rewrites the table's rows from the metadata (rows it lacks are kept as
they are, and listed).

    python3 tests/vz-sdk/extract.py sdk.json tests/vz-sdk/selectors.tsv [--write]
"""
import json
import sys

# clang's canonical spellings (arm64) -> Objective-C type encodings
SCALARS = {"void": "v", "_Bool": "B", "signed char": "B", "long": "q", "long long": "q",
           "unsigned long": "Q", "unsigned long long": "Q", "const char *": "r*",
           "char *": "*", "int": "i", "unsigned int": "I", "double": "d"}


def encode(t):
    """One metadata type record as an encoding."""
    canon = t.get("Canonical", "")
    kind = t.get("Kind", "")
    if kind == "block" or "(^" in canon:
        return "@?"
    if kind == "error-out" or (t.get("PointerDepth", 0) >= 2 and "NSError" in canon):
        return "^@"
    if kind in ("object", "class"):
        return "@" if t.get("PointerDepth", 1) <= 1 or canon in ("id", "Class") else "^@"
    if canon.endswith("**") or (kind == "pointer" and "NSError" in canon):
        return "^@"
    if canon.startswith("const ") and canon.endswith("*const *"):
        return "r^@"
    if kind == "enum":
        return "Q" if t.get("ABI") == "uint64" else "q"
    if canon in SCALARS:
        return SCALARS[canon]
    if canon in ("uint64_t",):
        return "Q"
    if "[]" in canon or canon.endswith("*const *") or canon.endswith("* const *"):
        return "r^@"
    return "?" + canon


def version(v):
    return v if v else "10.0"


def load_sdk(path):
    sdk = json.load(open(path))["SDK"]
    target = next(t for t in sdk["Targets"] if t["Architecture"] == "arm64")
    classes = {c["Name"]: c for c in target["Classes"]}
    methods = {}
    for m in target["Methods"]:
        key = ("-" if m["Instance"] else "+", m["Owner"], m["Selector"])
        # a method is checked where it is declared; an inherited record
        # only stands in when nothing else is there (init/new on a class)
        if key not in methods or not m.get("InheritedFrom"):
            methods[key] = m
    return classes, methods


def unavailable(m):
    """NS_UNAVAILABLE in Apple's header: the class's own record is marked
    unavailable, or the metadata says "init is unavailable"; the marks on
    records a class inherits (+new) are the Go generator's own."""
    if m.get("Unavailable") and not m.get("InheritedFrom"):
        return True  # the class's own record: its header says so
    return any("init is unavailable" in u for u in (m.get("Unsupported") or []))


def row_from(kind, cls, sel, m):
    ret = encode(m["Result"])
    args = ",".join(encode(p["Type"]) for p in (m.get("Parameters") or [])) or "-"
    if unavailable(m):
        return ["x", cls, sel, "-", "-", version(m.get("Introduced"))]
    return [kind, cls, sel, ret, args, version(m.get("Introduced"))]


def main(argv):
    if len(argv) < 3:
        sys.exit(__doc__)
    classes, methods = load_sdk(argv[1])
    lines = open(argv[2]).read().splitlines()
    out, diffs, missing = [], 0, []
    for line in lines:
        f = line.split("\t")
        if line.startswith("#") or not line.strip():
            out.append(line)
            continue
        if f[0] == "class":
            c = classes.get(f[1])
            if not c:
                missing.append(line)
                out.append(line)
                continue
            new = ["class", f[1], c.get("Super") or "-", version(c.get("Introduced"))]
        else:
            m = methods.get(("-" if f[0] == "x" else f[0], f[1], f[2])) or \
                methods.get(("+" if f[0] == "x" else f[0], f[1], f[2]))
            if not m:
                missing.append(line)
                out.append(line)
                continue
            new = row_from(f[0] if f[0] != "x" else ("-" if m["Instance"] else "+"), f[1], f[2], m)
        if new != f:
            diffs += 1
            print("table:    " + "\t".join(f) + "\nmetadata: " + "\t".join(new))
        out.append("\t".join(new))
    for line in missing:
        print("not in the metadata (kept): " + line)
    if "--write" in argv:
        open(argv[2], "w").write("\n".join(out) + "\n")
    print("%d differences, %d rows not in the metadata" % (diffs, len(missing)))
    return 1 if diffs and "--write" not in argv else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

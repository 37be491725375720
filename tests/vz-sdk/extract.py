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
    python3 tests/vz-sdk/extract.py --selftest   (the type encoder alone)
"""
import json
import sys

# clang's canonical spellings (arm64) -> Objective-C type encodings
SCALARS = {"void": "v", "_Bool": "B", "signed char": "B", "long": "q", "long long": "q",
           "unsigned long": "Q", "unsigned long long": "Q", "const char *": "r*",
           "char *": "*", "int": "i", "unsigned int": "I", "double": "d"}


def is_const(t):
    return "const" in (t.get("Qualifiers") or [])


def object_pointer(canon):
    """A pointer to objects the generator leaves opaque: "ObjectType *",
    "KeyType *", "id<NSCopying> *" (the const id * of arrayWithObjects:count:
    and dictionaryWithObjects:forKeys:count:)."""
    base = canon[:-1].strip() if canon.endswith("*") else ""
    return base in ("id", "ObjectType", "KeyType") or base.startswith("id<")


def encode(t):
    """One metadata type record as an encoding."""
    canon = t.get("Canonical", "")
    kind = t.get("Kind", "")
    if kind == "block" or "(^" in canon:
        return "@?"
    if kind == "error-out" or (t.get("PointerDepth", 0) >= 2 and "NSError" in canon):
        return "^@"
    # clang drops const from the canonical spelling and keeps it in Qualifiers:
    # const char * arrives as Kind "cstring", Canonical "char *"
    if kind == "cstring" or canon == "char *":
        return "r*" if is_const(t) else "*"
    if t.get("PointerDepth", 0) == 1 and object_pointer(canon):
        return "r^@" if is_const(t) else "^@"
    if kind in ("object", "class"):
        return "@" if t.get("PointerDepth", 1) <= 1 or canon in ("id", "Class") else "^@"
    if canon.endswith("**") or (kind == "pointer" and "NSError" in canon):
        return "^@"
    if canon.startswith("const ") and canon.endswith("*const *"):
        return "r^@"
    if canon in ("struct CGSize", "CGSize", "NSSize", "struct NSSize"):
        return "{CGSize=dd}"
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


def from_protocol(m):
    """A record of a protocol's declaration: NSObject's retain, release and
    autorelease are declared only in the NSObject *protocol* (with
    OBJC_ARC_UNAVAILABLE), and reach the class's records as InheritedFrom
    "protocol:NSObject"; a record of the protocol itself has an ID
    "protocol:NAME-selector" and the protocol's name as its owner, which
    for NSObject is also a class's name."""
    return (m.get("InheritedFrom") or "").startswith("protocol:") or \
        m.get("ID", "").startswith("protocol:")


def rank(m):
    """Which record of one (kind, owner, selector) describes it: the class's
    own declaration (0), else one inherited from a superclass (1), else a
    protocol's (2). Never the order of the file: a protocol's record of the
    same name must not replace the class's own."""
    if from_protocol(m):
        return 2
    return 1 if m.get("InheritedFrom") else 0


def load_sdk(path):
    sdk = json.load(open(path))["SDK"]
    target = next(t for t in sdk["Targets"] if t["Architecture"] == "arm64")
    classes = {c["Name"]: c for c in target["Classes"]}
    methods = {}
    for m in target["Methods"]:
        key = ("-" if m["Instance"] else "+", m["Owner"], m["Selector"])
        if key not in methods or rank(m) < rank(methods[key]):
            methods[key] = m
    return classes, methods


def default_init_unavailable(cls, methods):
    """A class whose header makes init unavailable only through its
    superclass (VZLinuxBootLoader, VZDiskImageStorageDeviceAttachment) has no
    init record of its own; the generator marks its +new record "default init
    is unavailable" instead. That record stands for the x init row."""
    new = methods.get(("+", cls, "new"))
    if new and any("default init is unavailable" in u for u in (new.get("Unsupported") or [])):
        return new
    return None


# How the metadata marks OBJC_ARC_UNAVAILABLE (retain, release, autorelease,
# retainCount): unavailable to code built with ARC only. The bridge is built
# without ARC (boot/objc.h), so for it these methods are there.
ARC_ONLY = "manual lifetime management is unavailable"


def unavailable(m):
    """NS_UNAVAILABLE in Apple's header: the class's (or a protocol's) own
    record is marked unavailable, or the metadata says "init is
    unavailable"; the marks on records a class inherits from a superclass
    (+new) are the Go generator's own, and an ARC-only mark is not one."""
    notes = m.get("Unsupported") or []
    if any(ARC_ONLY in u for u in notes):
        return False
    if m.get("Unavailable") and rank(m) != 1:
        return True  # the declaration itself says so
    return any("init is unavailable" in u for u in notes)


def row_from(kind, cls, sel, m):
    ret = encode(m["Result"])
    args = ",".join(encode(p["Type"]) for p in (m.get("Parameters") or [])) or "-"
    if unavailable(m):
        return ["x", cls, sel, "-", "-", version(m.get("Introduced"))]
    return [kind, cls, sel, ret, args, version(m.get("Introduced"))]


def report(row, new):
    """Print a row the metadata disagrees with; 1 if it does."""
    if new == row:
        return 0
    print("table:    " + "\t".join(row) + "\nmetadata: " + "\t".join(new))
    return 1


# Type records shaped as sdk.json gives them (arm64), with the encoding the
# Objective-C runtime uses: the shapes the table's rows depend on.
SELFTEST = [
    ({"Canonical": "char *", "Kind": "cstring", "PointerDepth": 1, "Qualifiers": ["const"]}, "r*"),
    ({"Canonical": "char *", "Kind": "cstring", "PointerDepth": 1, "Qualifiers": None}, "*"),
    ({"Canonical": "ObjectType *", "Kind": "unsupported", "PointerDepth": 1,
      "Qualifiers": ["const", "__unsafe_unretained"]}, "r^@"),
    ({"Canonical": "id<NSCopying> *", "Kind": "unsupported", "PointerDepth": 1,
      "Qualifiers": ["const", "__unsafe_unretained"]}, "r^@"),
    ({"Canonical": "KeyType *", "Kind": "unsupported", "PointerDepth": 1,
      "Qualifiers": ["__unsafe_unretained"]}, "^@"),
    ({"Canonical": "NSError * *", "Kind": "error-out", "PointerDepth": 2}, "^@"),
    ({"Canonical": "void (^)(NSError * )", "Kind": "unsupported", "PointerDepth": 1}, "@?"),
    ({"Canonical": "enum VZDiskImageCachingMode", "Kind": "enum", "ABI": "int64"}, "q"),
    ({"Canonical": "unsigned long long", "Kind": "scalar", "ABI": "uint64"}, "Q"),
    ({"Canonical": "NSObject<OS_dispatch_queue> *", "Kind": "object", "PointerDepth": 1}, "@"),
    ({"Canonical": "double", "Kind": "scalar"}, "d"),
    ({"Canonical": "struct CGSize", "Kind": "struct"}, "{CGSize=dd}"),
    ({"Canonical": "unsigned long long", "Kind": "enum", "ABI": "uint64"}, "Q"),
]


def selftest():
    bad = [(t, want, encode(t)) for t, want in SELFTEST if encode(t) != want]
    for t, want, got in bad:
        print("encode(%s) = %s, want %s" % (t["Canonical"], got, want))
    print("selftest: %d of %d encodings right" % (len(SELFTEST) - len(bad), len(SELFTEST)))
    return 1 if bad else 0


def main(argv):
    if argv[1:] == ["--selftest"]:
        return selftest()
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
            if not m and f[0] == "x" and f[2] == "init":
                m = default_init_unavailable(f[1], methods)
                if m:
                    new = ["x", f[1], "init", "-", "-", version(m.get("Introduced"))]
                    diffs += report(f, new)
                    out.append("\t".join(new))
                    continue
            if not m:
                missing.append(line)
                out.append(line)
                continue
            new = row_from(f[0] if f[0] != "x" else ("-" if m["Instance"] else "+"), f[1], f[2], m)
        diffs += report(f, new)
        out.append("\t".join(new))
    for line in missing:
        print("not in the metadata (kept): " + line)
    if "--write" in argv:
        open(argv[2], "w").write("\n".join(out) + "\n")
    print("%d differences, %d rows not in the metadata" % (diffs, len(missing)))
    return 1 if diffs and "--write" not in argv else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

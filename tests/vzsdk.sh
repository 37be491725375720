#!/bin/bash
# The signature oracle's extractor (tests/vz-sdk/extract.py) on a tiny
# sdk.json-shaped fixture (tests/vz-sdk/selftest/): the type encoder, and
# which record describes a method when a class's own declaration and a
# protocol's share a name (NSObject's release: the class's, whatever the
# order; retain, declared only by the protocol and unavailable only under
# ARC: available to the bridge, which is built without ARC).
. "$(dirname "$0")/lib.sh"
SDK=$(cd "$(dirname "$0")/vz-sdk" && pwd)
X="python3 $SDK/extract.py"
FIX=$SDK/selftest

if ! command -v python3 >/dev/null; then
    skipped "the oracle's extractor" "python3 is not installed"; finish; exit
fi
run $X --selftest
check "the type encoder gives the runtime's encodings" [ "$rc" -eq 0 ]
run $X "$FIX/sdk.json" "$FIX/selectors.tsv"
check "the fixture's records give its table, no difference" [ "$rc" -eq 0 ]
check "... and say so" grep -q '^0 differences' "$W/out"

# the check bites: the protocol's answer for release is a difference
sed 's/^-\tNSObject\trelease\tv\t-/x\tNSObject\trelease\t-\t-/' "$FIX/selectors.tsv" >"$W/wrong.tsv"
run $X "$FIX/sdk.json" "$W/wrong.tsv"
check "a table that marks NSObject release unavailable is a difference" [ "$rc" -eq 1 ]
check "... named as such" grep -q '^table: *x	NSObject	release' "$W/out"

# --write puts the class's rows back
run $X "$FIX/sdk.json" "$W/wrong.tsv" --write
check "--write rewrites the table from the records" cmp -s "$W/wrong.tsv" "$FIX/selectors.tsv"
finish

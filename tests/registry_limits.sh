#!/bin/bash
# Registry limits a push meets before its first blob (docs/remote.md,
# "Packs" and "Before the first blob"): ECR's 500 descriptors, a repository
# that does not exist (ECR without create-on-push), a registry that refuses
# strata's media types (GitLab), and a second push of the same tag. The
# registries' answers are imitated by tests/flaky_proxy.py in front of a
# real docker-registry on 127.0.0.1; its log shows every blob PUT by digest.
. "$(dirname "$0")/lib.sh"

export STRATA_HOME=$W/store DOCKER_CONFIG=$W/docker XDG_CACHE_HOME=$W/cache
rm -rf "$W"/store* "$W"/docker "$W"/cache "$W"/reg-* "$W"/b* "$W"/inst* "$W"/flat* "$W"/proxy-*
. "$(dirname "$0")/registry_lib.sh"
need_registry "registry limits tests"

EMPTY=sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a
# blob PUTs in a proxy log other than the 2-byte empty blob the probe names
packs_sent() { grep '^PUT .*/blobs/uploads/' "$1" | grep -vc "$EMPTY"; }
# the layers[] count of a pushed manifest
listed() { curl -s -H 'Accept: application/vnd.oci.image.manifest.v1+json' "http://$R/v2/$1/manifests/$2" |
    python3 -c 'import json,sys; print(len(json.load(sys.stdin)["layers"]))'; }

start_registry plain
R=127.0.0.1:$PORT

# ---- ECR's 500 descriptors: packs sized by the chain's data ----
# 40 MiB of data in 640 chunks of 64 KiB; with a pack unit of 64 KiB
# (STRATA_TEST_PACK_BYTES), one pack per chunk would list 643 descriptors.
"$MK" "$W/b-many" --size 256M --data 0:40M:5 >/dev/null
"$S" import "$W/b-many" many:v1 --chunk-size 64K >/dev/null 2>&1
start_proxy ecr "$R" ecr
ECR=127.0.0.1:$PPORT
export STRATA_TEST_PACK_BYTES=65536
run "$S" push many:v1 "$ECR/limits/many:v1" --json
check "a 640-chunk layer pushes through a registry that takes 500 descriptors" [ "$rc" -eq 0 ]
n=$(listed limits/many v1)
check "...listing $n descriptors, not one pack per chunk (643)" [ "${n:-999}" -le 500 ] && [ "${n:-0}" -gt 3 ]
STRATA_HOME=$W/store-pull run "$S" pull "$R/limits/many:v1" -t many
check "...and it pulls back" [ "$rc" -eq 0 ]
STRATA_HOME=$W/store-pull "$S" clone many "$W/inst-many" >/dev/null 2>&1
check "...byte for byte" cmp -s "$W/b-many/Disk.img" "$W/inst-many/Disk.img"

# a registry with no descriptor limit takes more, and the push says ECR would not
STRATA_TEST_PACK_BYTES=4096 run "$S" push many:v1 "$R/limits/many:v1-small-packs" --json
check "a manifest over 500 descriptors is pushed where the registry takes it" [ "$rc" -eq 0 ]
check "...with a note that ECR would refuse it" grep -qE "lists (5[0-9][0-9]|6[0-9][0-9]) descriptors: $R takes them, but ECR takes at most 500" "$W/err"

# ---- a chain that can't fit: refused before the first blob ----
"$S" clone many:v1 "$W/inst" >/dev/null 2>&1
"$MK" --write "$W/inst/Disk.img" 100M:1M:6
"$S" commit "$W/inst" -m child -t many:child >/dev/null 2>&1
"$MK" --write "$W/inst/Disk.img" 120M:1M:7
"$S" commit "$W/inst" -m grandchild -t many:grand >/dev/null 2>&1
unset STRATA_TEST_PACK_BYTES
start_proxy ecr8 "$R" ecr 8 # this registry takes 8 descriptors: 3 layers list 9 at least
E8=127.0.0.1:$PPORT
expect_error "a chain over the registry's descriptor limit is refused in one line" 1 \
    "refuses a manifest of" "$S" push many:grand "$E8/limits/grand:v1"
check "...naming the count, the chain and what to do" \
    grep -qE 'refuses a manifest of 12 descriptors .*: this chain of 3 layers lists 3 per layer and 3 packs \(ECR takes at most 500\): push a shorter chain, e\.g\. strata clone' "$W/err"
check "...before any pack was sent" [ "$(packs_sent "$W/proxy-ecr8.log")" = 0 ]
check "...and before the manifest" [ "$(grep -c "^PUT .*/manifests/v1" "$W/proxy-ecr8.log")" = 0 ]
# the advice works: one layer lists 3 and its packs
"$S" clone many:grand "$W/flat" >/dev/null 2>&1
"$S" import "$W/flat" flat:v1 >/dev/null 2>&1
run "$S" push flat:v1 "$E8/limits/grand:v1"
check "...and the chain made one layer (clone, import) pushes there" [ "$rc" -eq 0 ]

# ---- a repository that does not exist (ECR's 404 NAME_UNKNOWN) ----
start_proxy noname "$R" noname
NN=127.0.0.1:$PPORT
expect_error "a repository that does not exist is one line, at the preflight" 1 \
    "limits/none: the repository does not exist" "$S" push many:v1 "$NN/limits/none:v1"
check "...quoting the registry and saying to create it first" \
    grep -q "NAME_UNKNOWN The repository with name 'limits/none' does not exist.*create it first" "$W/err"
check "...with nothing uploaded" [ "$(grep -c '^PUT' "$W/proxy-noname.log")" = 0 ]

# ---- an account that may not push ----
start_proxy denied "$R" denied
DN=127.0.0.1:$PPORT
expect_error "a push the registry does not allow is one line, at the preflight" 1 \
    "limits/ro: pushing is not allowed (opening an upload: HTTP 403: DENIED" "$S" push many:v1 "$DN/limits/ro:v1"
check "...saying to log in as an account that may push" grep -q "strata login $DN as an account that may push" "$W/err"
check "...with nothing uploaded" [ "$(grep -c '^PUT' "$W/proxy-denied.log")" = 0 ]

# ---- a registry that checks media types against a list (GitLab) ----
start_proxy gitlab "$R" gitlab
GL=127.0.0.1:$PPORT
expect_error "a registry refusing strata's media types is one line, before any pack" 1 \
    "refuses strata's media types" "$S" push many:v1 "$GL/limits/gl:v1"
check "...naming the one it refused and what to do" \
    grep -q "unknown media type: application/vnd.strata.layer.manifest.v1).*needs all of .*application/vnd.strata.pack.v1+zstd.*push to another registry" "$W/err"
check "...with no pack sent" [ "$(packs_sent "$W/proxy-gitlab.log")" = 0 ]
check "...nor a tag" [ "$(grep -c '^PUT .*/manifests/v1' "$W/proxy-gitlab.log")" = 0 ]

# ---- the same tag twice: nothing uploaded, no probe again ----
start_proxy twice "$R" ecr
TW=127.0.0.1:$PPORT
run "$S" push many:child "$TW/limits/twice:v1" --json
check "a first push through the registry's checks exits 0" [ "$rc" -eq 0 ]
check "...having probed once" [ "$(grep -c '^PUT .*/manifests/sha256:' "$W/proxy-twice.log")" = 1 ]
before=$(wc -l <"$W/proxy-twice.log")
run "$S" push many:child "$TW/limits/twice:v1" --json
tail -n +$((before + 1)) "$W/proxy-twice.log" >"$W/proxy-twice2.log"
check "the same tag pushed again uploads nothing" \
    [ "$rc" -eq 0 ] && [ "$(jget blobs_uploaded)" = 0 ] && [ "$(jget bytes_uploaded)" = 0 ]
check "...sends no blob and no probe: only the manifest under its tag" \
    [ "$(grep -c '^PUT' "$W/proxy-twice2.log")" = 1 ] && grep -q '^PUT .*/manifests/v1 ' "$W/proxy-twice2.log"

finish

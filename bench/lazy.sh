#!/bin/bash
# Lazy run benchmark (issue 22): how soon a registry image answers ssh.
# The Debian 12 test system (tests/guest/mkdebian.sh: systemd, networkd,
# sshd, its kernel booted directly, ext4 on a 16 GiB sparse disk) plus a file
# of random data the boot never reads (LAZY_EXTRA_GIB, default "1 4": one run
# each), imported, pushed to a local docker-registry, and served through
# tests/flaky_proxy.py's "wan" mode: 200 Mbit/s shared by all connections,
# 20 ms before each request (LAZY_RATE_MBIT, LAZY_LATENCY_MS). For each size,
# under qemu (LAZY_ACCEL, default tcg; 2 vCPUs, 1 GiB):
#   local      cold boot with the layer in the store
#   pull+boot  `strata run HOST/REPO:TAG` into an empty store: the full pull,
#              then the boot (today's path, and every peer's)
#   lazy       `strata run HOST/REPO:TAG --lazy` into an empty store
#   lazy+prof  the same, after the first lazy run's boot profile was pushed
# Each row: seconds from `strata run` to the guest's ready marker on ttyS0
# and to its first ssh banner, and the bytes the proxy sent before the
# banner; the lazy rows also the compressed size of the chunks the guest
# read before it was ready (its boot profile: the floor for verified
# chunks), and a disk-bound command in the guest (LAZY_IO_MIB written and
# read back, O_DIRECT), timed by the guest again and again for as long as
# the fill runs, then LAZY_IO_RUNS times after it (default 9), on a file
# made afresh in each phase, after a run not counted. The
# local and lazy rows are run LAZY_REPEAT times in all (default 3; the
# repeats for their banner only, not waiting for the fill), as single TCG
# boots vary by seconds. Then the ratios the issue's targets are stated in,
# of the medians. Last, the growth with the image: lazy runs of every size
# in turns (LAZY_GROWTH_RUNS rounds, default 4, each round's order the last
# one's reversed), without a profile (a tag pushed before it) and with one:
# a slow drift of the machine over the bench's hour falls on every size
# alike, as it would not on rows measured one size after the other.
# Prints markdown for bench/RESULTS.md. Needs root once (mkdebian.sh's
# debootstrap; cached after), docker-registry and debugfs.
# Usage: bash bench/lazy.sh   (STRATA=path/to/strata, default build/strata)
set -euo pipefail
HERE=$(cd "$(dirname "$0")/.." && pwd)
S=${STRATA:-$HERE/build/strata}
SIZES=${LAZY_EXTRA_GIB:-1 4}
RATE=$(( ${LAZY_RATE_MBIT:-200} * 1000000 / 8 ))
LATENCY=${LAZY_LATENCY_MS:-20}
ACCEL=${LAZY_ACCEL:-tcg}
W=$(mktemp -d "${TMPDIR:-/var/tmp}/strata-bench-lazy.XXXXXX")
export DOCKER_CONFIG=$W/docker XDG_CACHE_HOME=$W/cache STRATA_TEST_BOOT=$W
PIDS=""
log() { echo "lazy.sh: $*" >&2; }
stop_all() {
    local home
    for home in "$W"/store-*; do
        [ -d "$home/vms" ] || continue
        for vm in "$home"/vms/*; do
            [ -d "$vm" ] && STRATA_HOME=$home "$S" stop "$(basename "$vm")" --timeout 5 >/dev/null 2>&1 || true
        done
    done
    for p in $PIDS; do kill "$p" 2>/dev/null || true; done
}
trap 'stop_all; rm -rf "$W"' EXIT
for c in docker-registry debugfs qemu-system-x86_64 python3; do
    command -v "$c" >/dev/null || { log "$c is not installed"; exit 1; }
done
[ -x "$S" ] || { log "no strata at $S (make, or STRATA=...)"; exit 1; }

bash "$HERE/tests/guest/mkdebian.sh" "$W/deb" >/dev/null
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_http() { for _ in $(seq 150); do curl -s -o /dev/null "$1" && return 0; sleep 0.1; done; return 1; }

REG=$(free_port)
mkdir -p "$W/reg"
cat >"$W/reg/config.yml" <<EOF
version: 0.1
log: {level: error, accesslog: {disabled: true}}
storage: {filesystem: {rootdirectory: $W/reg/data}, delete: {enabled: true}}
http: {addr: 127.0.0.1:$REG, secret: bench-only}
EOF
docker-registry serve "$W/reg/config.yml" >"$W/reg/log" 2>&1 &
PIDS="$PIDS $!"
wait_http "http://127.0.0.1:$REG/v2/"
PROXY=$(free_port)
python3 "$HERE/tests/flaky_proxy.py" "$PROXY" "127.0.0.1:$REG" wan "$RATE" "$LATENCY" >"$W/proxy.log" 2>&1 &
PIDS="$PIDS $!"
wait_http "http://127.0.0.1:$PROXY/v2/"

# until the guest's first ssh banner: polled, as a client would (QEMU's
# forwarded port accepts before the guest listens)
banner_at() { # HOME NAME: unix time of the first banner line
    local addr
    addr=$(STRATA_HOME=$1 "$S" ip "$2" --wait 900)
    python3 - "${addr%:*}" "${addr##*:}" <<'EOF'
import socket, sys, time
deadline = time.time() + 900
while time.time() < deadline:
    try:
        s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
        line = s.makefile("rb").readline()
        if line.startswith(b"SSH-"):
            print(f"{time.time():.3f}"); sys.exit(0)
    except OSError:
        pass
    time.sleep(0.2)
sys.exit(1)
EOF
}
marker_at() { # CONSOLE: unix time the ready marker appeared (polled)
    while ! grep -q '^STRATA-DEBIAN-READY' "$1" 2>/dev/null; do sleep 0.2; done
    date +%s.%N
}
bytes_between() { # T0 T: bytes the proxy sent in answers begun after T0 and ended by T
    awk -v a="$1" -v t="$2" '$3 == "wan" && $6 >= a && $7 <= t { n += $5 } END { print n + 0 }' "$W/proxy.log"
}
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }
mib() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }

ssh_in() { # HOME NAME CMD: run CMD in the guest over ssh
    STRATA_HOME=$1 "$S" ssh "$2" --wait 120 -i "$W/deb/id" -- "$3"
}
fill_state() { # HOME NAME: the lazy fill's state in ps --json
    STRATA_HOME=$1 "$S" ps --json | python3 -c '
import json, sys
for i in json.load(sys.stdin):
    if i["name"] == sys.argv[1]:
        print(i["lazy"]["state"] if i["lazy"] else "none")' "$2"
}
# a disk-bound command in the guest: a file of LAZY_IO_MIB (default 256)
# the guest made before (io_file: its chunks are the instance's own, during
# the fill as after it) overwritten with O_DIRECT and synced, then read back
# with O_DIRECT, timed by the guest's own clock (ssh's start-up is not the
# command): seconds
IO_MIB=${LAZY_IO_MIB:-256}
io_file() { ssh_in "$1" "$2" "dd if=/dev/urandom of=/root/io bs=1M count=$IO_MIB conv=fsync status=none" >/dev/null 2>&1; }
guest_io() { # HOME NAME
    ssh_in "$1" "$2" 's=$(date +%s%N)
        dd if=/dev/zero of=/root/io bs=1M count='"$IO_MIB"' oflag=direct conv=notrunc,fsync status=none &&
        dd if=/root/io of=/dev/null bs=1M iflag=direct status=none && echo $(( ($(date +%s%N) - s) / 1000000 ))' 2>/dev/null |
        awk '{ printf "%.2f", $1 / 1000 }'
}
# the command on a file made afresh (io_file), after one run not counted:
# the first O_DIRECT pass over a file the guest has just written through
# its page cache is slower, fill or no fill (1.56 s during a fill, 1.44 s
# after it, later runs 0.7-1.0 s; see bench/RESULTS.md, 2026-12-06). WHEN
# "during": again and again for as long as the fill runs (at most
# LAZY_IO_DURING_MAX runs, default 100), as the fill is uneven: five runs
# at its start said 1.31x where the whole fill gave 0.88-1.06x, and the
# publish at its end cost the most (bench/RESULTS.md). "after": LAZY_IO_RUNS
# times (default 9). Both phases do the same steps, so they differ by the
# fill only. The times joined by "/", "-" if none
guest_io_runs() { # HOME NAME WHEN
    local t all="" runs=${LAZY_IO_RUNS:-9}
    [ "$3" = during ] && runs=${LAZY_IO_DURING_MAX:-100}
    io_file "$1" "$2"
    guest_io "$1" "$2" >/dev/null
    for _ in $(seq "$runs"); do
        [ "$3" = during ] && [ "$(fill_state "$1" "$2")" != filling ] && break
        t=$(guest_io "$1" "$2")
        [ -n "$t" ] && all=${all:+$all/}$t
    done
    echo "${all:--}"
}
slowest() { # "A/B/C": the largest ("-" stays "-")
    tr / '\n' <<<"$1" | awk '$1 != "-" { if (!n++ || $1 > m) m = $1 } END { print n ? m : "-" }'
}
runs_said() { # "A/B/C": "median M of N runs, slowest S" ("-": "no run")
    [ "$1" = - ] && { echo "no run"; return; }
    echo "median $(median "$1") of $(tr / '\n' <<<"$1" | wc -l) runs, slowest $(slowest "$1")"
}
median() { # "A/B/C": their median ("-" stays "-")
    tr / '\n' <<<"$1" | sort -n | awk '$1 != "-" { v[n++] = $1 } END {
        if (!n) print "-"; else if (n % 2) print v[(n - 1) / 2]; else printf "%.2f\n", (v[n / 2 - 1] + v[n / 2]) / 2 }'
}
ready_at() { # HOME NAME: unix time the lazy run took its guest for ready (its log; 1 s steps)
    local t
    for _ in $(seq 300); do
        t=$(grep -m1 'lazy: the guest is ready' "$1/vms/.$2.lazy.log" 2>/dev/null | cut -d' ' -f1)
        [ -n "$t" ] && { echo "$t"; return; }
        sleep 0.5
    done
    echo 0
}
# MiB of what the guest needs before it is ready, compressed as a pack's
# frames are (zstd -3, a 1 MiB chunk a frame): the chunks of Disk.img its
# boot read (its profile) and the small files a lazy run fetches whole
# first (kernel, initrd: the hypervisor loads them): the floor of what a
# verified lazy fetch costs
touched_mib() { # PROFILE BUNDLE
    local c f i n=0
    [ -f "$1" ] || { echo "-"; return; }
    for c in $(python3 "$HERE/tests/profile_craft.py" chunks "$1"); do
        n=$((n + $(dd if="$2/Disk.img" bs=1M skip="$c" count=1 status=none | zstd -3 -c | wc -c)))
    done
    for f in "$2"/*; do
        [ "${f##*/}" = Disk.img ] && continue
        for ((i = 0; i * 1048576 < $(stat -c %s "$f"); i++)); do
            n=$((n + $(dd if="$f" bs=1M skip="$i" count=1 status=none | zstd -3 -c | wc -c)))
        done
    done
    mib "$n"
}

# one row: `strata run ARGS` in store HOME as instance NAME; "ready banner
# bytes" (and, with MODE lazy, "io_during io_after": the guest's disk-bound
# command while the fill runs and after it, the fill waited for so the
# layer and its boot profile are in the store), or "refused: WHY" when run
# exits before the guest is ready
measure() { # HOME NAME MODE ARGS...
    local home=$1 name=$2 mode=$3; shift 3
    local t0 pid
    t0=$(date +%s.%N)
    STRATA_HOME=$home "$S" run "$@" --name "$name" --driver qemu --accel "$ACCEL" >"$W/run-$name.log" 2>&1 &
    pid=$!
    while [ ! -s "$home/vms/$name/.console.log" ]; do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "refused: $(tail -1 "$W/run-$name.log")"; return
        fi
        sleep 0.2
    done
    local tm tb extra=""
    tm=$(marker_at "$home/vms/$name/.console.log")
    tb=$(banner_at "$home" "$name")
    if [ "$mode" = lazy ]; then
        local during after tr
        tr=$(ready_at "$home" "$name")
        during=$(guest_io_runs "$home" "$name" during)
        while [ "$(fill_state "$home" "$name")" = filling ]; do sleep 1; done
        after=$(guest_io_runs "$home" "$name" after)
        extra=" $during $after $(secs "$t0" "$tr") $(bytes_between "$t0" "$tr")"
    elif [ "$mode" = again ]; then # a repeat of a lazy row: its times only, the fill not waited for
        local tr
        tr=$(ready_at "$home" "$name")
        extra=" - - $(secs "$t0" "$tr") $(bytes_between "$t0" "$tr")"
    fi
    echo "$(secs "$t0" "$tm") $(secs "$t0" "$tb") $(bytes_between "$t0" "$tb")$extra"
    STRATA_HOME=$home "$S" stop "$name" --timeout 30 >/dev/null 2>&1 || true
    wait "$pid" 2>/dev/null || true
}

row() { # LABEL RESULT FLOOR_MIB
    local label=$1 r=$2 floor=${3:-}
    case $r in
    refused:*) printf '| %s | refused | | | | | | | %s |\n' "$label" "${r#refused: }" ;;
    *) set -- $r
       printf '| %s | %s | %s | %s | %s | %s | %s | %s |\n' "$label" "$1" "$2" "$(mib "$3")" \
           "${6:-}" "${7:+$(mib "$7")}" "$floor" "${4:+guest I/O (s) during the fill: $(runs_said "$4"); after: $(runs_said "$5")}" ;;
    esac
}
# a store removed, and the disk settled (the deletion's writes and discards
# done) before the next timed boot: 10 GiB deleted at +4 GiB against 2.5 at
# +1 would otherwise weigh on the bigger image's boots only
drop() { rm -rf "$@"; sync; }
# a row's ssh banner in LAZY_REPEAT runs (default 3): FIRST's, then more
# runs as instance "again" of store HOME, each into an empty store when
# FRESH is 1 (a lazy run), else beside the layer there: the times joined by "/"
repeats() { # FIRST HOME FRESH MODE ARGS...
    local all r first=$1 home=$2 fresh=$3 mode=$4; shift 4
    all=$(field "$first" 2)
    for _ in $(seq 2 "${LAZY_REPEAT:-3}"); do
        [ "$fresh" = 1 ] && drop "$home"
        r=$(measure "$home" again "$mode" "$@")
        case $r in refused:*) log "a repeat was refused: ${r#refused: }" ;; *) all=$all/$(field "$r" 2) ;; esac
        if [ "$fresh" = 1 ]; then drop "$home"; else drop "$home/vms/again"; fi
    done
    echo "$all"
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0 && a != "-") printf "%.2f", a / b; else print "-" }'; }
field() { awk -v i="$2" '{ print $i }' <<<"$1"; } # RESULT N: its Nth word

echo "bench/lazy.sh, $(date -u +%Y-%m-%d) on $(uname -n) ($(nproc) cores, $(uname -m)), QEMU $(qemu-system-x86_64 --version | head -1 | awk '{print $4}'), accel $ACCEL;"
echo "link $((RATE * 8 / 1000000)) Mbit/s, ${LATENCY} ms per request; $("$S" --version 2>/dev/null | head -1)"
echo
for g in $SIZES; do
    log "+$g GiB: the image"
    rm -rf "$W/img"
    mkdir -p "$W/img"
    for f in vmlinuz initrd.img Settings.json; do cp "$W/deb/$f" "$W/img/"; done
    cp --sparse=always "$W/deb/Disk.img" "$W/img/Disk.img"
    head -c "${g}G" /dev/urandom >"$W/bulk"
    debugfs -w -R "write $W/bulk /bulk.bin" "$W/img/Disk.img" >/dev/null 2>&1
    rm -f "$W/bulk"
    home=$W/store-local-$g
    layer=$(STRATA_HOME=$home "$S" import "$W/img" deb)
    alloc=$(du -k "$W/img/Disk.img" | cut -f1)
    log "+$g GiB: push (layer ${layer:0:12})"
    STRATA_HOME=$home "$S" push deb "127.0.0.1:$REG/bench/deb:g$g" --json >"$W/push-$g.json"
    # a tag that never gets the boot profile (it goes with the manifest a
    # push writes, and only g$g is pushed again), for the growth runs
    STRATA_HOME=$home "$S" push deb "127.0.0.1:$REG/bench/deb:np$g" >/dev/null
    blobs=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["bytes_uploaded"])' "$W/push-$g.json")
    ref=127.0.0.1:$PROXY/bench/deb:g$g

    echo "### +$g GiB of data the boot never reads"
    echo
    echo "Disk.img: $(mib $((alloc * 1024))) MiB allocated; registry blobs $(mib "$blobs") MiB."
    echo
    echo "| run | ready marker (s) | ssh banner (s) | MiB fetched before the banner | lazy ready (s) | MiB fetched before it | MiB the boot needs (zstd -3) | note |"
    echo "|---|---|---|---|---|---|---|---|"
    log "+$g GiB: local cold boot"
    local_r=$(measure "$home" local plain deb)
    row "local cold boot (layer present)" "$local_r"
    local_all=$(repeats "$local_r" "$home" 0 plain deb)
    drop "$home" # each store goes once measured: at +4 GiB, five would not fit the disk
    log "+$g GiB: full pull, then boot"
    row "full pull, then boot" "$(measure "$W/store-pull-$g" pull plain "$ref" --no-lazy)"
    drop "$W/store-pull-$g"
    log "+$g GiB: lazy, no profile"
    lazy=$(measure "$W/store-lazy-$g" lazy lazy "$ref" --lazy)
    floor=$(touched_mib "$W/store-lazy-$g/layers/$layer/profile" "$W/img")
    row "lazy, no profile" "$lazy" "$floor"
    prof=refused:
    case $lazy in
    refused:*) row "lazy, with a profile" "$lazy" ;;
    *)  lazy_all=$(repeats "$lazy" "$W/store-again-$g" 1 again "$ref" --lazy) # before the profile is pushed
        # the first lazy run recorded the profile beside the layer; push it with the layer
        STRATA_HOME=$W/store-lazy-$g "$S" push "$layer" "127.0.0.1:$REG/bench/deb:g$g" >/dev/null
        drop "$W/store-lazy-$g"
        log "+$g GiB: lazy, with the profile"
        prof=$(measure "$W/store-prof-$g" prof lazy "$ref" --lazy)
        row "lazy, with a profile" "$prof" "$floor"
        prof_all=$(repeats "$prof" "$W/store-again-$g" 1 again "$ref" --lazy) ;;
    esac
    echo
    case $lazy$prof in
    *refused:*) ;;
    *)  lb=$(median "$local_all") lm=$(median "$lazy_all") pm=$(median "$prof_all")
        echo "The ssh banner in ${LAZY_REPEAT:-3} runs each (s): local cold boot $local_all (median $lb), lazy without a profile $lazy_all ($lm), with one $prof_all ($pm)."
        echo
        echo "Against the targets (medians): lazy without a profile $(ratio "$lm" "$lb")x the local cold boot (target <= 2), with one $(ratio "$pm" "$lb")x (<= 1.5);"
        echo "bytes before the lazy run's ready $(ratio "$(mib "$(field "$lazy" 7)")" "$floor")x what the boot needs without a profile, $(ratio "$(mib "$(field "$prof" 7)")" "$floor")x with one (<= 1.25);"
        echo "the guest's disk-bound command (timed in the guest, medians) during the fill $(ratio "$(median "$(field "$lazy" 4)")" "$(median "$(field "$lazy" 5)")")x and $(ratio "$(median "$(field "$prof" 4)")" "$(median "$(field "$prof" 5)")")x its time after (<= 1.2)."
        echo "$g" >>"$W/grown" ;;
    esac
    echo
    drop "$W"/store-*-"$g" "$W/img"
done

# the growth: the lazy banner of each size measured in turns, from the tags
# TAG<size> ("np": never a profile; "g": the profile pushed): "SIZE
# T1/T2/..." a line per size, in SIZES' order ("-" for a size whose runs
# were all refused, so the table's columns stay the sizes')
grown_banners() { # TAG
    local g r round order
    for round in $(seq "${LAZY_GROWTH_RUNS:-4}"); do
        if [ $((round % 2)) = 1 ]; then order=$(cat "$W/grown"); else order=$(tac "$W/grown"); fi
        for g in $order; do
            log "growth, $1 +$g GiB, round $round"
            r=$(measure "$W/store-grow" grow again "127.0.0.1:$PROXY/bench/deb:$1$g" --lazy)
            drop "$W/store-grow"
            case $r in refused:*) log "a growth run was refused: ${r#refused: }" ;; *) echo "$g $(field "$r" 2)" ;; esac
        done
    done | awk 'NR == FNR { size[++n] = $1; next } { t[$1] = t[$1] (t[$1] == "" ? "" : "/") $2 }
        END { for (i = 1; i <= n; i++) print size[i], (size[i] in t ? t[size[i]] : "-") }' "$W/grown" -
}
growth_row() { # LABEL BANNERS: a table row of grown_banners' lines
    echo "| $1 | $(while read -r _ t; do printf '%s (median %s) | ' "$t" "$(median "$t")"; done <<<"$2")"
}
if [ "$(wc -l <"$W/grown" 2>/dev/null || echo 0)" -ge 2 ]; then
    np=$(grown_banners np)
    pr=$(grown_banners g)
    echo "### The growth with the image, sizes in turns"
    echo
    echo "| lazy run | $(awk '{ printf "%s+%s GiB, ssh banner (s)", (NR > 1 ? " | " : ""), $1 }' "$W/grown") |"
    echo "|---$(awk '{ printf "|---" }' "$W/grown")|"
    growth_row "no profile" "$np"
    growth_row "with a profile" "$pr"
    echo
    read -r g1 np1 < <(head -1 <<<"$np")
    read -r g2 np2 < <(tail -1 <<<"$np")
    read -r _ p1 < <(head -1 <<<"$pr")
    read -r _ p2 < <(tail -1 <<<"$pr")
    echo "From +$g1 to +$g2 GiB (medians of ${LAZY_GROWTH_RUNS:-4} runs each): the lazy banner $(ratio "$(median "$np2")" "$(median "$np1")")x without a profile, $(ratio "$(median "$p2")" "$(median "$p1")")x with one (target: within 1.10)."
fi

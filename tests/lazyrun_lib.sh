# Shared by the suites that run registry images lazily under qemu
# (lazy_run, lazy_debian), after lib.sh and registry_lib.sh.

# need_lazy_boots WHAT TOOL...: the suite is skipped (and ends) unless a
# registry can be had, this is Linux, boots are allowed and the tools are
# installed; then its qemus are marked and its background pids ($PIDS)
# killed at the end
need_lazy_boots() {
    local what=$1 c
    shift
    need_registry "$what"
    if [ "$(uname)" != Linux ]; then
        skipped "$what" "they boot guests under qemu on Linux"; finish; exit
    fi
    if [ -n "${STRATA_SKIP_BOOT:-}" ]; then
        skipped "$what" "boots are skipped (STRATA_SKIP_BOOT)"; finish; exit
    fi
    for c in qemu-system-x86_64 "$@"; do
        command -v "$c" >/dev/null || { skipped "$what" "$c is not installed"; finish; exit; }
    done
    PIDS=""
    mark_qemus
    trap 'for p in $PIDS; do kill -CONT "$p" 2>/dev/null; kill "$p" 2>/dev/null; done; kill_marked_qemus; true' EXIT
}
# hold_proxy / release_proxy: the proxy (start_proxy's) stopped and resumed,
# so that a fill it feeds cannot end between checks of its progress, however
# fast the machine (a stopped process still accepts connections; strata
# waits 60 s on a silent transfer before giving up)
hold_proxy() { kill -STOP "$PROXY_PID"; }
release_proxy() { kill -CONT "$PROXY_PID"; }
cond() { eval "$1"; }
parent_of() { "$S" inspect "$1" --json 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["parent"])'; }
ps_lazy() { # NAME KEY: a field of the instance's "lazy" in ps --json (None if not lazy)
    "$S" ps --json | python3 -c '
import json, sys
for i in json.load(sys.stdin):
    if i["name"] == sys.argv[1]:
        print(i["lazy"][sys.argv[2]] if i["lazy"] else None)' "$1" "$2"
}
wait_fill() { # NAME SECONDS: until ps says its fill ended (done or failed); 1 if it
    local i s gone=0 # did not in time, or the instance was no lazy run for 30 s
    for ((i = 0; i < $2 * 2; i++)); do
        s=$(ps_lazy "$1" state)
        case $s in
        done | failed) return 0 ;;
        filling | idle) gone=0 ;;
        *) gone=$((gone + 1)); [ "$gone" -ge 60 ] && return 1 ;;
        esac
        sleep 0.5
    done
    return 1
}

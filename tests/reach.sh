#!/bin/bash
# Reaching a running guest with the qemu driver: ip, ssh, screenshot and
# run --gui's VNC display. One guest boot serves every check that needs a
# guest: the test guest with dropbear (tests/guest/mksshguest.sh) and an
# authorized key made here. A second, short run checks what an instance
# without --gui shows. Software emulation: boots are slow, waits generous.
. "$(dirname "$0")/lib.sh"
HERE=$(cd "$(dirname "$0")" && pwd)
export STRATA_HOME=$W/store
unset STRATA_HOST_ID
rm -rf "$STRATA_HOME" "$W"/sshg* "$W"/id*

if [ "$(uname)" != Linux ]; then
    skipped "reach tests" "they need a Linux host"; finish; exit
fi
for c in qemu-system-x86_64 ssh ssh-keygen python3 setsid; do
    command -v "$c" >/dev/null || { skipped "reach tests" "$c is not installed"; finish; exit; }
done
GUEST=${STRATA_GUEST_DIR:-/var/tmp/strata-guest}
if ! bash "$HERE/guest/mkguest.sh" "$GUEST" >"$W/mkguest.log" 2>&1; then
    skipped "reach tests" "could not build the test guest: $(tail -1 "$W/mkguest.log")"; finish; exit
fi
ssh-keygen -q -t ed25519 -N '' -C strata-reach-test -f "$W/id"
if ! bash "$HERE/guest/mksshguest.sh" "$GUEST" "$W/sshg" "$W/id.pub" >"$W/mksshguest.log" 2>&1; then
    skipped "reach tests" "could not build the ssh guest: $(tail -1 "$W/mksshguest.log")"; finish; exit
fi
KVER=$(cat "$GUEST/cache/kernel-version")

mark_qemus # none of its qemus outlives this script
PIDS=""
cleanup() { for p in $PIDS; do kill "$p" 2>/dev/null; done; kill_marked_qemus; true; }
trap cleanup EXIT

start_vm() { # name args...: strata run in the background
    local name=$1; shift
    "$S" run "$@" --name "$name" --accel tcg >"$W/run-$name.log" 2>&1 &
    PIDS="$PIDS $!"
}
ps_field() { # name python-expression on instance i
    "$S" ps --json 2>/dev/null | python3 -c 'import json,sys
i=next((i for i in json.load(sys.stdin) if i["name"]==sys.argv[1]), None)
print("" if i is None else eval(sys.argv[2]))' "$1" "$2"
}
wait_running() { local i; for ((i = 0; i < 300; i++)); do [ "$(ps_field "$1" 'i["state"]')" = running ] && return 0; sleep 0.2; done; return 1; }
wait_gone() { local i; for ((i = 0; i < 150; i++)); do [ -e "$STRATA_HOME/running/$1.run" ] || return 0; sleep 0.2; done; return 1; }
# the first bytes a server sends on HOST PORT (a VNC server: "RFB 003.008")
greeting() {
    python3 -c 'import socket,sys
s=socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
print(s.recv(12).decode("ascii", "replace").strip())' "$1" "$2" 2>/dev/null
}
# a PNG whose pixels are not all one colour (decodes the five filter types)
png_not_blank() {
    python3 - "$1" <<'EOF'
import struct, sys, zlib
d = open(sys.argv[1], "rb").read()
assert d[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
pos, idat, w = 8, b"", 0
while pos < len(d):
    n, t = struct.unpack(">I4s", d[pos:pos + 8])
    body = d[pos + 8:pos + 8 + n]
    if t == b"IHDR":
        w, h, depth, ctype = struct.unpack(">IIBB", body[:10])
        assert depth == 8 and ctype in (2, 6), "unexpected PNG format"
        bpp = 3 if ctype == 2 else 4
    elif t == b"IDAT":
        idat += body
    pos += 12 + n
raw, stride, prev, colours, i = zlib.decompress(idat), w * bpp, None, set(), 0
for y in range(h):
    f, line = raw[i], bytearray(raw[i + 1:i + 1 + stride])
    i += 1 + stride
    up = prev or bytearray(stride)
    for x in range(stride):
        a = line[x - bpp] if x >= bpp else 0
        b, c = up[x], up[x - bpp] if x >= bpp else 0
        if f == 1: line[x] = (line[x] + a) & 255
        elif f == 2: line[x] = (line[x] + b) & 255
        elif f == 3: line[x] = (line[x] + (a + b) // 2) & 255
        elif f == 4:
            p = a + b - c
            pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            line[x] = (line[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
    colours.update(bytes(line[k:k + bpp]) for k in range(0, stride, bpp))
    prev = line
sys.exit(0 if len(colours) > 1 else 1)
EOF
}

# ---- vz: the address from macOS's DHCP lease file, on the recording
# stand-in of the framework (build/strata-vzsim): no guest boots
vz_ip_tests() {
    local V=$B/strata-vzsim H=$W/vzstore
    if [ ! -x "$V" ]; then skipped "vz ip and ssh" "$V is not built (make tests)"; return; fi
    rm -rf "$H" "$W/lb" && "$MK" "$W/lb" --size 16M --linux >/dev/null && printf 'kernel' >"$W/lb/vmlinuz"
    echo '{"version":1,"os":"linux","ssh_user":"admin","boot":{"loader":"linux","kernel":"vmlinuz"}}' >"$W/lb/Settings.json"
    STRATA_HOME=$H "$V" import "$W/lb" lx >/dev/null 2>&1
    STRATA_HOME=$H "$V" run lx --driver vz --name v1 >"$W/run-v1.log" 2>&1 &
    PIDS="$PIDS $!"
    local i mac=""
    for ((i = 0; i < 100; i++)); do
        STRATA_HOME=$H "$V" ps --json 2>/dev/null | grep -q '"name":"v1"[^}]*"state":"running"' && break
        sleep 0.1
    done
    mac=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["mac"])' "$H/vms/v1/Settings.json")
    # bootpd writes each byte unpadded: 0a becomes a
    local unpadded future=$(printf '0x%x' $(($(date +%s) + 3600))) past=$(printf '0x%x' $(($(date +%s) - 60)))
    unpadded=$(echo "$mac" | sed -E 's/(^|:)0([0-9a-f])/\1\2/g')
    lease() { printf '{\n\tname=g\n\tip_address=%s\n\thw_address=%s\n\tidentifier=%s\n\tlease=%s\n}\n' "$1" "$2" "$2" "$3"; }
    { lease 192.168.64.20 "1,$unpadded" "$past"; lease 192.168.64.21 "1,$unpadded" "$future"
      lease 192.168.64.22 "ff,f1:f5:dd:7f:0:2:0:0:ab:11" "$future"; } >"$W/leases"
    STRATA_HOME=$H STRATA_TEST_DHCPD_LEASES=$W/leases run "$V" ip v1
    check "vz: ip finds the unexpired lease for the instance's MAC (as bootpd writes it: $unpadded)" [ "$rc" -eq 0 ] && [ "$(cat "$W/out")" = 192.168.64.21 ]
    STRATA_HOME=$H STRATA_TEST_DHCPD_LEASES=$W/leases run "$V" ip v1 --json
    check "...--json says it came from the lease file" grep -qF '"address":"192.168.64.21","port":22,"source":"lease"' "$W/out"
    lease 192.168.64.22 "ff,f1:f5:dd:7f:0:2:0:0:ab:11" "$future" >"$W/leases-duid"
    STRATA_HOME=$H STRATA_TEST_DHCPD_LEASES=$W/leases-duid expect_error "vz: no lease for the MAC, but a DUID one: ip explains the pitfall" 1 \
        "1 lease(s) keyed by a DUID client identifier" "$V" ip v1
    check "...and the fix" grep -q "dhcp-identifier: mac" "$W/err"
    : >"$W/leases-late"
    (sleep 2; lease 192.168.64.23 "1,$unpadded" "$future" >"$W/leases-late") &
    STRATA_HOME=$H STRATA_TEST_DHCPD_LEASES=$W/leases-late run "$V" ip v1 --wait 30
    check "vz: ip --wait waits for the guest's lease" [ "$rc" -eq 0 ] && [ "$(cat "$W/out")" = 192.168.64.23 ]
    # the ssh command line, shown by a stand-in ssh that prints it and exits 7
    mkdir -p "$W/fakebin"
    printf '#!/bin/sh\nfor a in "$@"; do echo "$a"; done\nexit 7\n' >"$W/fakebin/ssh" && chmod +x "$W/fakebin/ssh"
    PATH=$W/fakebin:$PATH STRATA_HOME=$H STRATA_TEST_DHCPD_LEASES=$W/leases run "$V" ssh v1 -- ls -l /
    check "vz: ssh runs the system's ssh and exits with its status (7)" [ "$rc" -eq 7 ]
    printf '%s\n' -o "UserKnownHostsFile=\"$H/vms/v1/.known_hosts\"" -o StrictHostKeyChecking=accept-new \
        -o HashKnownHosts=no -o GlobalKnownHostsFile=/dev/null -o HostKeyAlias=strata-v1 -p 22 -l admin \
        -- 192.168.64.21 ls -l / >"$W/want"
    check "...with the instance's known_hosts, port 22, ssh_user and the command's words" cmp -s "$W/want" "$W/out"
    PATH=$W/fakebin:$PATH STRATA_HOME=$H STRATA_TEST_DHCPD_LEASES=$W/leases run "$V" ssh v1 --user me -i "$W/id"
    printf '%s\n' -o "UserKnownHostsFile=\"$H/vms/v1/.known_hosts\"" -o StrictHostKeyChecking=accept-new \
        -o HashKnownHosts=no -o GlobalKnownHostsFile=/dev/null -o HostKeyAlias=strata-v1 -p 22 -l me \
        -o "IdentityFile=\"$W/id\"" -o IdentitiesOnly=yes -- 192.168.64.21 >"$W/want"
    check "...--user and -i replace them; no command: a login shell" cmp -s "$W/want" "$W/out"
    expect_error "vz: screenshot is not offered" 1 "the vz driver can't take screenshots" env STRATA_HOME="$H" "$V" screenshot v1 "$W/v.png"
    STRATA_HOME=$H "$V" stop v1 --force >/dev/null 2>&1
}
vz_ip_tests

run "$S" import "$W/sshg" sshguest
check "import the ssh guest" [ "$rc" -eq 0 ]

# ---- bad input, before any guest runs: one line each
expect_error "ip of an instance that doesn't run" 1 "no running instance 'nope' (see strata ps)" "$S" ip nope
expect_error "ssh to an instance that doesn't run: exit 255, as ssh's own failures" 255 "no running instance 'nope'" "$S" ssh nope -- true
expect_error "screenshot of an instance that doesn't run" 1 "no running instance 'nope'" "$S" screenshot nope "$W/x.png"
expect_error "screenshot into a missing directory names it" 1 "$W/no/such.png: its directory" "$S" screenshot nope "$W/no/such.png"
expect_error "ip --resolver takes lease or arp" 1 "--resolver 'dns' must be lease or arp" "$S" ip nope --resolver dns
expect_error "ip --wait takes seconds" 1 "--wait soon: a whole number" "$S" ip nope --wait soon
expect_error "ssh --identity must be readable" 255 "--identity $W/nokey" "$S" ssh nope -i "$W/nokey" -- true
expect_error "screenshot needs a file" 1 "usage: strata screenshot" "$S" screenshot nope

# ---- one boot with --gui: ps, ip, ssh, known_hosts, screenshot, VNC
USER_KH=$(getent passwd "$(id -un)" | cut -d: -f6)/.ssh/known_hosts
USER_KH_BEFORE=$(sha256sum "$USER_KH" 2>/dev/null)
start_vm r1 sshguest --gui --ephemeral
# started in the background: ip --wait waits for it to run and be reachable
run "$S" ip r1 --wait 120
check "ip --wait waits for the instance to start, then prints 127.0.0.1:PORT" grep -qxE '127\.0\.0\.1:[0-9]+' "$W/out"
IP_OUT=$(cat "$W/out")
check "the instance runs" wait_running r1
SSH_PORT=$(ps_field r1 'i["ssh"]["port"]')
check "ps --json records the forwarded ssh port ($SSH_PORT), the one ip printed" [ "$IP_OUT" = "127.0.0.1:$SSH_PORT" ]
run "$S" ip r1 --json
check "ip --json: address, port and source" is_json "$W/out"
check "...with the forward's values" grep -qF "{\"name\":\"r1\",\"address\":\"127.0.0.1\",\"port\":$SSH_PORT,\"source\":\"forward\"}" "$W/out"
expect_error "--resolver is for vz instances" 1 "--resolver is for vz instances" "$S" ip r1 --resolver arp
VNC_HOST=$(ps_field r1 'i["vnc"]["host"]') VNC_PORT=$(ps_field r1 'i["vnc"]["port"]')
check "--gui: ps --json shows the VNC display on loopback ($VNC_HOST:$VNC_PORT)" [ "$VNC_HOST" = 127.0.0.1 ] && [ "$VNC_PORT" -ge 5900 ]
run "$S" ps
check "...and ps shows it too" grep -qE "^r1 .* 127\.0\.0\.1:$SSH_PORT +127\.0\.0\.1:$VNC_PORT\$" "$W/out"
check "...where a VNC server answers" [ "$(greeting 127.0.0.1 "$VNC_PORT" | cut -c1-3)" = RFB ]

t0=$(date +%s)
run "$S" ssh r1 --wait 600 -i "$W/id" -- uname -a
took=$(($(date +%s) - t0))
check "ssh --wait NAME -- uname -a runs in the guest (exit $rc, after $took s)" [ "$rc" -eq 0 ]
check "...and prints the guest's kernel ($KVER)" grep -qE "^Linux .* $KVER .*GNU/Linux\$" "$W/out"
if [ "$rc" -ne 0 ]; then sed 's/^/    console: /' "$STRATA_HOME/vms/r1/.console.log" | tail -15; fi
run "$S" ssh r1 -i "$W/id" -- exit 3
check "ssh returns the remote command's exit status (3)" [ "$rc" -eq 3 ]
run "$S" ssh r1 -i "$W/id" -- 'echo "$0" && cat /proc/cmdline'
check "the command's words reach the guest's shell" grep -q "panic=-1" "$W/out"
KH=$STRATA_HOME/vms/r1/.known_hosts
check "the host key is kept in the instance's own known_hosts, under the instance's name" \
    grep -qxF "strata-r1 $(cat "$W/sshg/host_key.pub")" "$KH"
check "...and only there: the user's known_hosts is untouched" [ "$(sha256sum "$USER_KH" 2>/dev/null)" = "$USER_KH_BEFORE" ]
# a changed key for this instance is refused, not silently accepted
cp "$KH" "$W/kh.keep"
sed -i "s|^strata-r1 ssh-ed25519 .*|strata-r1 $(cut -d' ' -f1,2 "$W/id.pub")|" "$KH"
run setsid -w "$S" ssh r1 -i "$W/id" -- true </dev/null
check "a host key that changed is refused (exit $rc)" [ "$rc" -eq 255 ] && grep -q "HOST IDENTIFICATION HAS CHANGED" "$W/err"
cp "$W/kh.keep" "$KH"
run setsid -w "$S" ssh r1 -i "$W/id" --user nobody -- true </dev/null
check "--user picks the user (nobody: refused by the guest, exit $rc)" [ "$rc" -eq 255 ] && grep -q "Permission denied" "$W/err"
run "$S" ssh r1 -i "$W/id" -- whoami
check "...and without it, the bundle's ssh_user (root)" [ "$rc" -eq 0 ] && [ "$(cat "$W/out")" = root ]

run "$S" screenshot r1 "$W/shot.png"
check "screenshot saves the screen (exit $rc)" [ "$rc" -eq 0 ]
check "...as a PNG that is not blank" png_not_blank "$W/shot.png"
check "...leaving no temporary file" bash -c "! ls -A '$W' | grep -q 'shot.png.tmp'"
STRATA_TEST_SCREENDUMP_PPM=1 run "$S" screenshot r1 "$W/old.png"
check "with an old qemu's PPM screen dump, converted (exit $rc): a PNG that is not blank" png_not_blank "$W/old.png"
check "...leaving no PPM behind" bash -c "! ls -A '$W' | grep -q 'ppm'"
mkdir -p "$W/rel" && (cd "$W/rel" && "$S" screenshot r1 rel.png >"$W/out" 2>"$W/err")
check "screenshot takes a path relative to where it runs" png_not_blank "$W/rel/rel.png"

run "$S" stop r1 --force
check "stop r1" [ "$rc" -eq 0 ] && wait_gone r1
expect_error "ssh to a stopped instance: one line, exit 255" 255 "no running instance 'r1' (see strata ps)" "$S" ssh r1 -i "$W/id" -- true
t0=$(date +%s)
expect_error "ssh --wait 2 to a stopped instance gives up after the wait" 255 "no running instance 'r1'" "$S" ssh r1 --wait 2 -- true
took=$(($(date +%s) - t0))
check "...in about 2 s (took $took s)" [ "$took" -ge 2 ] && [ "$took" -le 10 ]
expect_error "ip of a stopped instance" 1 "no running instance 'r1'" "$S" ip r1

# ---- without --gui: no VNC, no screen; the ssh forward all the same
start_vm r2 sshguest --ephemeral
check "an instance without --gui runs" wait_running r2
check "ps --json: no VNC display" [ "$(ps_field r2 'i["vnc"]')" = None ]
check "...and an ssh forward" [ -n "$(ps_field r2 'i["ssh"]["port"]')" ]
expect_error "screenshot of an instance without a display says how to get one" 1 "no display to capture: run it with --gui" "$S" screenshot r2 "$W/none.png"
check "...and writes nothing" bash -c "! ls -A '$W' | grep -q 'none.png'"
"$S" stop r2 --force >/dev/null 2>&1
wait_gone r2
for p in $PIDS; do wait "$p" 2>/dev/null; done
finish

#!/bin/bash
# A stand-in for qemu-system-x86_64 (STRATA_QEMU) that tests the KVM probe's
# logic on any host: the probe's two guests print their line or not as
# FAKE_IMAGE / FAKE_KERNEL (ok|hang) say; a real start is logged to
# FAKE_STARTS and fails at once.
serial="" prev=""
for a in "$@"; do
    [ "$prev" = -serial ] && serial=${a#file:}
    prev=$a
done
case "$*" in
*kvm-probe.img*)
    [ "${FAKE_IMAGE:-ok}" = ok ] && echo "strata-kvm-probe: 64-bit guest runs" >"$serial"
    exec sleep 30 ;;
*earlyprintk*)
    echo "early console in setup code" >"$serial"
    [ "${FAKE_KERNEL:-ok}" = ok ] && echo "[    0.000000] Linux version 6.1.0" >>"$serial"
    exec sleep 30 ;;
*)
    echo "$*" >>"$FAKE_STARTS"
    echo "fake qemu: no real start" >&2
    exit 1 ;;
esac

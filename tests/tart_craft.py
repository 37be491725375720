#!/usr/bin/env python3
"""Craft tart images in a registry, for tests and the bench only: an
encoder written apart from strata's decoder (python3-lz4's raw blocks in
Apple's framing), following tart's source at 5287b59 (docs/tart.md):
OCI/Manifest.swift (media types, annotations; the manifest JSON with sorted
keys and "/" escaped, Foundation's JSONEncoder), VMDirectory+OCI.swift
(layer order: config, disk.v2 slices, nvram; the stub OCI config),
Layerizer/DiskV2.swift (each slice compressed on its own, annotated with
its uncompressed size and digest), VMConfig.swift (the config's fields).
REGISTRY is host:port, plain HTTP.

tart_craft.py push REGISTRY REPO TAG --disk FILE --nvram FILE [options]
    --os linux|darwin       the config's os (darwin needs the next two)
    --hardware-model FILE   VZ's HardwareModel data (base64 in the config)
    --machine-id FILE       VZ's MachineIdentifier data (the config's ecid)
    --slice BYTES           uncompressed bytes per disk layer (tart: 512 MiB)
    --block BYTES           decoded bytes per bv41 block (default 64 KiB)
    --variant NAME          a hostile or unusual image (see VARIANTS)
    prints the manifest's digest
tart_craft.py mutate SRC DST PERCENT SEED
    DST: SRC with PERCENT% of its 1 MiB pieces given new bytes
tart_craft.py floor REGISTRY REPO TAG
    fetch every disk layer, decode it (python3-lz4) and SHA-256 it, as fast
    as one process can with 4 threads; prints bytes and seconds (the bench)
"""
import argparse
import base64
import hashlib
import json
import os
import random
import struct
import sys
import threading
import time
import urllib.request

import lz4.block

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from oci_craft import OCI, request, put_blob  # noqa: E402

TART = "application/vnd.cirruslabs.tart."
ANN = "org.cirruslabs.tart."
VARIANTS = {
    "udigest": "disk layer 1's uncompressed-content-digest is another's",
    "badheader": "disk layer 1's first block magic is 'bv42'",
    "sizemore": "disk layer 1 decodes to more bytes than its uncompressed-size (disk size follows)",
    "sizeless": "disk layer 1 decodes to fewer bytes than its uncompressed-size (disk size follows)",
    "v1": "a legacy disk.v1 layer follows the config",
    "asif": "an ASIF overlay layer follows the disk",
    "many": "10,000 disk layers (the same small blob again and again)",
    "sum": "the uncompressed-disk-size annotation is one byte off the slices' sum",
    "unknown": "a layer of a media type tart does not know (ignored)",
    "noend": "disk layer 1 lacks its end marker",
}


def tart_json(obj, sort=True):
    """Foundation's JSONEncoder: compact, '/' escaped; sorted keys for the manifest"""
    return json.dumps(obj, sort_keys=sort, separators=(",", ":")).replace("/", "\\/").encode()


def apple_lz4(data, block=64 << 10):
    """Apple's LZ4 framing: bv41 blocks whose matches reach into the
    previous block, every fifth block stored (bv4-), then bv4$"""
    out, prev = [], b""
    for n, at in enumerate(range(0, len(data), block)):
        chunk = data[at:at + block]
        if n % 5 == 4:
            out.append(b"bv4-" + struct.pack("<I", len(chunk)) + chunk)
        else:
            z = lz4.block.compress(chunk, mode="default", store_size=False, dict=prev[-65536:])
            out.append(b"bv41" + struct.pack("<II", len(chunk), len(z)) + z)
        prev = (prev + chunk)[-65536:]
    out.append(b"bv4$")
    return b"".join(out)


def blob_exists(reg, repo, digest):
    try:
        request("HEAD", f"http://{reg}/v2/{repo}/blobs/{digest}")
        return True
    except urllib.request.HTTPError:
        return False


def push_blob(reg, repo, data):
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    if blob_exists(reg, repo, digest):  # as tart: HEAD before the upload (#887)
        return {"digest": digest, "size": len(data)}
    return put_blob(reg, repo, data)


def vm_config(a):
    """VMConfig.encode(to:) order: version, os, arch, platform's keys, cpus,
    memory, macAddress, display, diskFormat (not sorted: JSONEncoder())"""
    c = {"version": 1, "os": a.os, "arch": "arm64" if a.os == "darwin" else "amd64"}
    if a.os == "darwin":
        c["ecid"] = base64.b64encode(open(a.machine_id, "rb").read()).decode()
        c["hardwareModel"] = base64.b64encode(open(a.hardware_model, "rb").read()).decode()
    c.update({"cpuCountMin": 2, "cpuCount": 2, "memorySizeMin": 1 << 30, "memorySize": 1 << 30,
              "macAddress": "52:54:00:12:34:56", "display": {"width": 1024, "height": 768},
              "diskFormat": "raw"})
    return tart_json(c, sort=False)


def disk_layer(reg, repo, data, usize=None, udigest=None, block=64 << 10, blob=None):
    z = blob if blob is not None else apple_lz4(data, block)
    d = push_blob(reg, repo, z)
    return {"mediaType": TART + "disk.v2", **d, "annotations": {
        ANN + "uncompressed-size": str(len(data) if usize is None else usize),
        ANN + "uncompressed-content-digest": udigest or "sha256:" + hashlib.sha256(data).hexdigest()}}


def disk_layers(reg, repo, a):
    size = os.path.getsize(a.disk)
    layers = []
    with open(a.disk, "rb") as f:
        for i, at in enumerate(range(0, size, a.slice)):
            data = f.read(a.slice)
            v = a.variant if i == 0 else None
            if v == "udigest":
                layers.append(disk_layer(reg, repo, data, udigest="sha256:" + hashlib.sha256(b"x").hexdigest(),
                                         block=a.block))
            elif v == "badheader":
                z = bytearray(apple_lz4(data, a.block))
                z[3] = ord("2")
                layers.append(disk_layer(reg, repo, data, blob=bytes(z)))
            elif v == "noend":
                layers.append(disk_layer(reg, repo, data, blob=apple_lz4(data, a.block)[:-4]))
            elif v == "sizemore":
                layers.append(disk_layer(reg, repo, data, usize=len(data) - 4096, block=a.block))
            elif v == "sizeless":
                layers.append(disk_layer(reg, repo, data, usize=len(data) + 4096, block=a.block))
            else:
                layers.append(disk_layer(reg, repo, data, block=a.block))
    return layers


def push(a):
    reg, repo = a.registry, a.repo
    config = push_blob(reg, repo, vm_config(a))
    layers = [{"mediaType": TART + "config.v1", **config}]
    if a.variant == "v1":
        layers.append({"mediaType": TART + "disk.v1", **push_blob(reg, repo, b"legacy")})
    disk = disk_layers(reg, repo, a)
    if a.variant == "many":
        one = disk_layer(reg, repo, b"\0" * (1 << 20))
        disk = [one] * 10000
    layers += disk
    if a.variant == "asif":
        layers.append({"mediaType": TART + "disk.asif.overlay.v1", **push_blob(reg, repo, b"asif")})
    if a.variant == "unknown":
        layers.append({"mediaType": "application/vnd.example.notes.v1", **push_blob(reg, repo, b"notes")})
    layers.append({"mediaType": TART + "nvram.v1", **push_blob(reg, repo, open(a.nvram, "rb").read())})
    total = sum(int(d["annotations"][ANN + "uncompressed-size"]) for d in disk)
    if a.variant == "sum":
        total += 1
    stub = tart_json({"architecture": "arm64" if a.os == "darwin" else "amd64", "os": a.os,
                      "config": {"Labels": {ANN + "disk.format": "raw"}}})
    m = {"schemaVersion": 2, "mediaType": OCI,
         "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **push_blob(reg, repo, stub)},
         "layers": layers,
         "annotations": {ANN + "uncompressed-disk-size": str(total),
                         ANN + "upload-time": "2026-01-02T03:04:05Z"}}
    body = tart_json(m)
    request("PUT", f"http://{reg}/v2/{repo}/manifests/{a.tag}", body, {"Content-Type": OCI})
    print("sha256:" + hashlib.sha256(body).hexdigest())


def mutate(src, dst, percent, seed):
    rnd = random.Random(seed)
    data = bytearray(open(src, "rb").read())
    pieces = len(data) >> 20
    for p in rnd.sample(range(pieces), max(1, pieces * percent // 100)):
        data[p << 20:(p + 1) << 20] = rnd.randbytes(1 << 20)
    open(dst, "wb").write(data)


def floor(reg, repo, tag):
    """download + decode + SHA-256 of every disk layer, 4 at a time"""
    _, _, body = request("GET", f"http://{reg}/v2/{repo}/manifests/{tag}", headers={"Accept": OCI})
    disk = [d for d in json.loads(body)["layers"] if d["mediaType"] == TART + "disk.v2"]
    total, lock, todo = [0], threading.Lock(), list(disk)

    def one(d):
        with urllib.request.urlopen(f"http://{reg}/v2/{repo}/blobs/{d['digest']}") as r:
            z = r.read()
        zsha, usha, at, prev = hashlib.sha256(z), hashlib.sha256(), 0, b""
        while z[at:at + 4] != b"bv4$":
            magic, dsize = z[at:at + 4], struct.unpack_from("<I", z, at + 4)[0]
            if magic == b"bv41":
                esize = struct.unpack_from("<I", z, at + 8)[0]
                chunk = lz4.block.decompress(z[at + 12:at + 12 + esize], uncompressed_size=dsize, dict=prev)
                at += 12 + esize
            else:
                chunk, at = z[at + 8:at + 8 + dsize], at + 8 + dsize
            usha.update(chunk)
            prev = chunk[-65536:]
        assert zsha.hexdigest() == d["digest"][7:]
        with lock:
            total[0] += int(d["annotations"][ANN + "uncompressed-size"])

    def worker():
        while True:
            with lock:
                if not todo:
                    return
                d = todo.pop(0)
            one(d)
    t0 = time.time()
    ts = [threading.Thread(target=worker) for _ in range(4)]
    [t.start() for t in ts]
    [t.join() for t in ts]
    print(total[0], "%.3f" % (time.time() - t0))


def main():
    if sys.argv[1] == "mutate":
        mutate(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
        return
    if sys.argv[1] == "floor":
        floor(*sys.argv[2:5])
        return
    p = argparse.ArgumentParser()
    p.add_argument("cmd", choices=["push"])
    p.add_argument("registry")
    p.add_argument("repo")
    p.add_argument("tag")
    p.add_argument("--disk", required=True)
    p.add_argument("--nvram", required=True)
    p.add_argument("--os", default="linux", choices=["linux", "darwin"])
    p.add_argument("--hardware-model")
    p.add_argument("--machine-id")
    p.add_argument("--slice", type=int, default=512 << 20)
    p.add_argument("--block", type=int, default=64 << 10)
    p.add_argument("--variant", choices=sorted(VARIANTS))
    push(p.parse_args())


main()

#!/usr/bin/env python3
"""Read a tart image from a registry as tart's pull does, written apart from
strata (tests/tart_push.sh): python3-lz4 decodes Apple's bv41 blocks, each
with the previous block's decoded bytes as its dictionary.

tart_read.py HOST/REPO:TAG OUTDIR SLICE
Checks, following cirruslabs/tart (VMDirectory+OCI.swift pullFromRegistry,
OCI/Layerizer/DiskV2.swift, OCI/Manifest.swift): the manifest's raw bytes
(Config.jsonEncoder: sorted keys, compact, '/' as '\\/'), its media types and
layer order (config, disk.v2 slices, nvram), every annotation, every blob's
digest and size, each slice's LZ4 stream and uncompressed digest, slices of
SLICE bytes (the last shorter). Writes OUTDIR/{config.json,disk.img,
nvram.bin,manifest.json,oci-config.json} and prints a JSON summary.
Exits 1 with one line on the first thing tart would not take."""
import hashlib
import json
import os
import re
import struct
import sys
import urllib.request

import lz4.block

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_CONFIG = "application/vnd.cirruslabs.tart.config.v1"
MT_DISK = "application/vnd.cirruslabs.tart.disk.v2"
MT_NVRAM = "application/vnd.cirruslabs.tart.nvram.v1"
ANN_USIZE = "org.cirruslabs.tart.uncompressed-size"
ANN_UDIGEST = "org.cirruslabs.tart.uncompressed-content-digest"
ANN_DISK = "org.cirruslabs.tart.uncompressed-disk-size"
ANN_TIME = "org.cirruslabs.tart.upload-time"


def fail(msg):
    print("tart_read: " + msg, file=sys.stderr)
    sys.exit(1)


def foundation(obj):
    """JSON as tart's Config.jsonEncoder() writes it"""
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).replace("/", "\\/").encode()


def get(url, accept=None):
    req = urllib.request.Request(url)
    if accept:
        req.add_header("Accept", accept)
    with urllib.request.urlopen(req) as r:
        return r.read()


def sha(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def decode_apple_lz4(data, limit, stats):
    """Apple's framing: bv41 (LE32 decoded, LE32 encoded, raw LZ4 block
    whose matches may reach into the previous block), bv4- (stored), bv4$"""
    out, pos, prev = bytearray(), 0, b""
    while True:
        if pos + 4 > len(data):
            fail("LZ4 stream ends without bv4$")
        magic = data[pos:pos + 4]
        if magic == b"bv4$":
            if pos + 4 != len(data):
                fail("bytes after bv4$")
            return bytes(out)
        if magic == b"bv41":
            dsize, esize = struct.unpack_from("<II", data, pos + 4)
            block = data[pos + 12:pos + 12 + esize]
            if len(block) != esize:
                fail("a bv41 block is cut short")
            if dsize > 4 << 20:
                fail("a bv41 block of %d decoded bytes" % dsize)
            dec = lz4.block.decompress(block, uncompressed_size=dsize, dict=prev[-65536:])
            if len(dec) != dsize:
                fail("a bv41 block decodes to %d bytes, not %d" % (len(dec), dsize))
            try:  # does it reach into the previous block?
                alone = lz4.block.decompress(block, uncompressed_size=dsize)
                linked = alone != dec
            except Exception:
                linked = True
            stats["blocks"] += 1
            stats["linked_blocks"] += linked
            stats["max_block"] = max(stats["max_block"], dsize)
            pos += 12 + esize
        elif magic == b"bv4-":
            (dsize,) = struct.unpack_from("<I", data, pos + 4)
            dec = data[pos + 8:pos + 8 + dsize]
            stats["stored_blocks"] += 1
            pos += 8 + dsize
        else:
            fail("bad block magic %r at %d" % (magic, pos))
        out += dec
        prev = dec
        if len(out) > limit:
            fail("the stream decodes past its uncompressed-size")


def main():
    ref, outdir, slice_size = sys.argv[1], sys.argv[2], int(sys.argv[3])
    host, rest = ref.split("/", 1)
    repo, tag = rest.rsplit(":", 1)
    base = "http://%s/v2/%s" % (host, repo)
    raw = get("%s/manifests/%s" % (base, tag), OCI_MANIFEST)
    os.makedirs(outdir, exist_ok=True)
    open(os.path.join(outdir, "manifest.json"), "wb").write(raw)
    m = json.loads(raw)
    if raw != foundation(m):
        fail("the manifest is not Foundation's sorted, compact, '\\/'-escaped JSON")
    if sorted(m) != ["annotations", "config", "layers", "mediaType", "schemaVersion"]:
        fail("manifest keys %s" % sorted(m))
    if m["schemaVersion"] != 2 or m["mediaType"] != OCI_MANIFEST:
        fail("schemaVersion/mediaType")
    if sorted(m["config"]) != ["digest", "mediaType", "size"] or m["config"]["mediaType"] != OCI_CONFIG:
        fail("config descriptor %s" % m["config"])
    blob = lambda d: get("%s/blobs/%s" % (base, d["digest"]))

    def checked(d):
        data = blob(d)
        if sha(data) != d["digest"] or len(data) != d["size"]:
            fail("blob %s: digest or size differs" % d["digest"])
        return data

    stub_raw = checked(m["config"])
    open(os.path.join(outdir, "oci-config.json"), "wb").write(stub_raw)
    stub = json.loads(stub_raw)
    if stub_raw != foundation(stub):
        fail("the OCI config is not sorted, compact, escaped JSON")
    if sorted(stub) != ["architecture", "config", "os"] or \
            stub["config"] != {"Labels": {"org.cirruslabs.tart.disk.format": "raw"}}:
        fail("OCI config %s" % stub)
    layers = m["layers"]
    kinds = [l["mediaType"] for l in layers]
    if len(layers) < 3 or kinds[0] != MT_CONFIG or kinds[-1] != MT_NVRAM or \
            any(k != MT_DISK for k in kinds[1:-1]):
        fail("layer order %s" % kinds)
    for l in layers:
        if sorted(l) != ["annotations", "digest", "mediaType", "size"]:
            fail("layer keys %s" % sorted(l))
    if layers[0]["annotations"] != {} or layers[-1]["annotations"] != {}:
        fail("config/nvram layers carry annotations")
    config_raw = checked(layers[0])
    open(os.path.join(outdir, "config.json"), "wb").write(config_raw)
    stats = {"blocks": 0, "linked_blocks": 0, "stored_blocks": 0, "max_block": 0}
    total, disks = 0, layers[1:-1]
    with open(os.path.join(outdir, "disk.img"), "wb") as disk:
        for i, l in enumerate(disks):
            a = l["annotations"]
            if sorted(a) != [ANN_UDIGEST, ANN_USIZE] or not re.fullmatch(r"[0-9]+", a[ANN_USIZE]):
                fail("disk layer %d annotations %s" % (i, a))
            usize = int(a[ANN_USIZE])
            if usize > slice_size or (i < len(disks) - 1 and usize != slice_size):
                fail("disk layer %d holds %d bytes; slices are %d" % (i, usize, slice_size))
            data = decode_apple_lz4(checked(l), usize, stats)
            if len(data) != usize or sha(data) != a[ANN_UDIGEST]:
                fail("disk layer %d: uncompressed size or digest differs" % i)
            for off in range(0, len(data), 1 << 20):  # sparse, as tart's zeroSkippingWrite
                piece = data[off:off + (1 << 20)]
                if piece.count(0) != len(piece):
                    disk.seek(total + off)
                    disk.write(piece)
            total += usize
        disk.truncate(total)
    open(os.path.join(outdir, "nvram.bin"), "wb").write(checked(layers[-1]))
    ann = m["annotations"]
    if sorted(ann) != [ANN_DISK, ANN_TIME] or ann[ANN_DISK] != str(total) or \
            not re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", ann[ANN_TIME]):
        fail("manifest annotations %s" % ann)
    stats.update(layers=len(layers), disk_layers=len(disks), disk_size=total,
                 arch=stub["architecture"], os=stub["os"],
                 disk_digests=[l["digest"] for l in disks])
    print(json.dumps(stats))


main()

#!/usr/bin/env python3
"""Craft strata OCI manifests in a registry, for tests only (as a hostile or
a merely unusual pusher would). REGISTRY is host:port, plain HTTP.

oci_craft.py annotate REGISTRY REPO SRC DST KEY=VALUE...
    the manifest of tag SRC with these annotations set (an empty VALUE
    removes the key), put under tag DST
oci_craft.py repeat REGISTRY REPO SRC DST BYTES
    the chain of SRC listed again and again (the same layers, a cycle)
    until the manifest is about BYTES long, ending with SRC's own chain
oci_craft.py duppack REGISTRY REPO SRC DST
    SRC's manifest with its last pack descriptor listed twice
oci_craft.py concat REGISTRY REPO A B DST
    the layers of tag A's chain, then tag B's (its config and
    annotations): two chains listed as one, which is no chain
oci_craft.py chain REGISTRY REPO DST N
    a valid chain of N layers, each with one file "f" of one new 4 KiB
    data chunk in a pack of its own, blobs uploaded, under tag DST
"""
import hashlib
import json
import struct
import sys
import urllib.request

OCI = "application/vnd.oci.image.manifest.v1+json"
MT = "application/vnd.strata."


def request(method, url, body=None, headers=None):
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    with urllib.request.urlopen(req) as r:
        return r.status, dict(r.headers), r.read()


def get_manifest(reg, repo, tag):
    _, _, body = request("GET", f"http://{reg}/v2/{repo}/manifests/{tag}", headers={"Accept": OCI})
    return json.loads(body)


def put_manifest(reg, repo, tag, m):
    body = json.dumps(m, separators=(",", ":")).encode()
    request("PUT", f"http://{reg}/v2/{repo}/manifests/{tag}", body, {"Content-Type": OCI})
    return len(body)


def put_blob(reg, repo, data):
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    _, h, _ = request("POST", f"http://{reg}/v2/{repo}/blobs/uploads/", b"")
    loc = h["Location"]
    if loc.startswith("/"):
        loc = f"http://{reg}{loc}"
    sep = "&" if "?" in loc else "?"
    request("PUT", f"{loc}{sep}digest={digest}", data, {"Content-Type": "application/octet-stream"})
    return {"digest": digest, "size": len(data)}


def raw_zstd_frame(data):
    """one zstd frame holding data as a single raw block, content size written"""
    assert 256 <= len(data) < 65792
    header = struct.pack("<IBH", 0xFD2FB528, 0x60, len(data) - 256)  # single segment, 2-byte size
    block = (1 | (len(data) << 3)).to_bytes(3, "little")  # last block, raw
    return header + block + data


def chain(reg, repo, tag, n):
    layers, parent, config = [], None, None
    for i in range(n):
        chunk = hashlib.sha256(b"chunk %d" % i).digest() * 128  # 4 KiB, never all zero
        cid = hashlib.sha256(chunk).hexdigest()
        text = "strata-layer 1\n" + (f"parent {parent}\n" if parent else "")
        text += f"file f 4096 0644 4096\n{cid}\n"
        man = text.encode()
        info = b"created 1700000000\nmessage layer-" + str(i).encode() + b"\nbytes-added 4096\n"
        frame = raw_zstd_frame(chunk)
        pack = put_blob(reg, repo, frame)
        index = b"STRATACI" + struct.pack("<IIQ", 1, 1, 1)
        index += bytes.fromhex(pack["digest"][7:]) + struct.pack("<Q", pack["size"])
        index += bytes.fromhex(cid) + struct.pack("<IIQI", 0, 4096, 0, len(frame))
        config = dict(mediaType=MT + "layer.manifest.v1", **put_blob(reg, repo, man))
        layers += [config, dict(mediaType=MT + "layer.info.v1", **put_blob(reg, repo, info)),
                   dict(mediaType=MT + "chunk-index.v1", **put_blob(reg, repo, index)),
                   dict(mediaType=MT + "pack.v1+zstd", **pack)]
        parent = hashlib.sha256(man).hexdigest()
    m = {"schemaVersion": 2, "mediaType": OCI, "artifactType": MT + "layer.v1", "config": config,
         "layers": layers, "annotations": {"dev.strata.layer.id": parent, "dev.strata.chain": str(n)}}
    return put_manifest(reg, repo, tag, m)


def main():
    cmd, reg, repo = sys.argv[1], sys.argv[2], sys.argv[3]
    if cmd == "chain":
        print(chain(reg, repo, sys.argv[4], int(sys.argv[5])))
        return
    m = get_manifest(reg, repo, sys.argv[4])
    dst = sys.argv[5]
    if cmd == "annotate":
        for kv in sys.argv[6:]:
            k, v = kv.split("=", 1)
            if v:
                m["annotations"][k] = v
            else:
                m["annotations"].pop(k, None)
    elif cmd == "repeat":
        once = m["layers"]
        per = len(json.dumps(once, separators=(",", ":")))
        m["layers"] = once * max(2, int(sys.argv[6]) // per)
    elif cmd == "concat":
        b = get_manifest(reg, repo, sys.argv[5])
        m["layers"] += b["layers"]
        m["config"], m["annotations"] = b["config"], b.get("annotations", {})
        dst = sys.argv[6]
    elif cmd == "duppack":
        packs = [d for d in m["layers"] if d["mediaType"].endswith("pack.v1+zstd")]
        m["layers"].append(packs[-1])
    print(put_manifest(reg, repo, dst, m))


if __name__ == "__main__":  # tart_craft.py imports its helpers
    main()

#!/usr/bin/env python3
"""An outside client of driftless, written from PROTOCOL.md alone.

It signs in, chunks and hashes files with the FastCDC loop of PROTOCOL.md
section 1.2 (gear table and masks from protocol/vectors.json, after checking
every vector there), uploads through presigned parts, commits, retries the
commit, downloads and verifies what it wrote and what another client wrote
(zstd chunks), follows the changes feed with a cursor and a long-poll from a
second device, meets a conflict and a refused request, and reads a file's
history. Any mismatch exits non-zero with the reason.

    python3 tests/outside/client.py --url http://127.0.0.1:8080 \
        --user alice --password secret [--other PATH --other-hash HEX]

Needs the PyPI packages blake3 and zstandard (scripts/test.sh installs them).
"""

import argparse
import base64
import json
import os
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request

import blake3
import zstandard

HERE = os.path.dirname(os.path.abspath(__file__))
VECTORS = os.path.join(HERE, "..", "..", "protocol", "vectors.json")
MASK64 = (1 << 64) - 1
CONTEXT = "driftless 2026-11 file content hash v1"
DEFAULT = {"min": 262144, "avg": 1048576, "max": 4194304}


def fail(why):
    print(f"outside client: FAILED: {why}", file=sys.stderr)
    sys.exit(1)


def check(cond, why):
    if not cond:
        fail(why)


# --- PROTOCOL.md section 1: chunks and hashes -------------------------------

class Chunker:
    def __init__(self, vectors):
        self.gear = [int(g, 16) for g in vectors["gear"]]
        self.masks = [int(m, 16) for m in vectors["mask_table"]]

    def mask(self, avg):
        import math
        return self.masks[round(math.log2(avg))]

    def cut(self, b, at, params):
        """Length of the chunk starting at b[at] (section 1.2)."""
        n = min(len(b) - at, params["max"])
        lo = params["min"]
        if n <= lo:
            return n
        mask, gear = self.mask(params["avg"]), self.gear
        h = 0
        for i in range(lo, n & ~1):
            h = ((h << 1) + gear[b[at + i]]) & MASK64
            if h & mask == 0:
                return i
        return n

    def chunks(self, data, params):
        out, at = [], 0
        while at < len(data):
            n = self.cut(data, at, params)
            out.append({"offset": at, "len": n, "hash": blake3.blake3(data[at:at + n]).hexdigest()})
            at += n
        return out


def content_hash(params, chunks):
    """Section 1.3."""
    h = blake3.blake3(derive_key_context=CONTEXT)
    h.update(b"F20\0" + b"".join(params[k].to_bytes(4, "little") for k in ("min", "avg", "max")))
    for c in chunks:
        h.update(bytes.fromhex(c["hash"]))
    h.update(len(chunks).to_bytes(8, "little"))
    h.update(sum(c["len"] for c in chunks).to_bytes(8, "little"))
    return h.hexdigest()


def crc32c(data):
    """CRC-32C (Castagnoli), reflected, as S3 computes it."""
    table = crc32c.table
    crc = 0xFFFFFFFF
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


crc32c.table = []
for _n in range(256):
    _c = _n
    for _ in range(8):
        _c = (_c >> 1) ^ 0x82F63B78 if _c & 1 else _c >> 1
    crc32c.table.append(_c)


def source_bytes(src):
    if "utf8" in src:
        return src["utf8"].encode()
    return blake3.blake3(src["blake3_xof"].encode()).digest(length=src["len"])


def check_vectors(chunker, v):
    for f in v["files"]:
        data = source_bytes(f["source"])
        got = chunker.chunks(data, f["chunking"])
        check(got == f["chunks"], f"vector {f['name']}: chunks differ")
        check(content_hash(f["chunking"], got) == f["content_hash"], f"vector {f['name']}: content hash")
    part = v["part"]["request"]
    data = source_bytes(next(f for f in v["files"] if f["name"] == v["part"]["of"])["source"])
    crc = crc32c(data)
    check(crc == v["part"]["crc32c_u32"], "vector part: crc32c")
    check(base64.b64encode(crc.to_bytes(4, "big")).decode() == part["checksum_crc32c"], "vector part: base64")
    z = v["zstd"]
    raw = decode("zstd", bytes.fromhex(z["stored_hex"]), z["raw_len"])
    check(raw == z["raw_utf8"].encode(), "vector zstd")
    check(v["error"]["code"] == "conflict" and v["error"]["status"] == 409, "vector error")


def decode(codec, stored, raw_len):
    """Section 1.4: exactly one frame declaring raw_len, window <= 2^24."""
    if codec == "none":
        check(len(stored) == raw_len, "a raw chunk of the wrong length")
        return stored
    check(codec == "zstd" and 0 < len(stored) < raw_len, f"codec {codec}")
    params = zstandard.get_frame_parameters(stored)
    check(params.content_size == raw_len, "the frame does not declare the raw length")
    check(params.dict_id == 0 and params.window_size <= 1 << 24, "frame dictionary or window")
    out = zstandard.ZstdDecompressor(max_window_size=1 << 24).decompress(stored, max_output_size=raw_len)
    check(len(out) == raw_len, "the frame decodes to another length")
    return out


# --- HTTP ---------------------------------------------------------------------

class Api:
    def __init__(self, url, token=None):
        self.url, self.token = url.rstrip("/"), token

    def call(self, method, path, body=None, query=None, expect=200):
        url = self.url + path + ("?" + urllib.parse.urlencode(query) if query else "")
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(url, data=data, method=method)
        if data is not None:
            req.add_header("content-type", "application/json")
        if self.token:
            req.add_header("authorization", "Bearer " + self.token)
        try:
            with urllib.request.urlopen(req, timeout=120) as r:
                status, text, ctype = r.status, r.read(), r.headers.get("content-type", "")
        except urllib.error.HTTPError as e:
            status, text, ctype = e.code, e.read(), e.headers.get("content-type", "")
        if status != expect:
            fail(f"{method} {path}: HTTP {status} (wanted {expect}): {text[:300]!r}")
        if status >= 400:
            check(ctype.startswith("application/problem+json"), f"{path}: error is {ctype}")
        return json.loads(text) if text else None


def storage(method, url, headers, body=None):
    req = urllib.request.Request(url, data=body, method=method)
    for k, v in headers.items():
        req.add_header(k, v)
    with urllib.request.urlopen(req, timeout=120) as r:
        return r.status, r.headers, r.read()


# --- The round trip -----------------------------------------------------------

def put_op(op_id, path, data, chunker, base_rev=None, params=DEFAULT):
    chunks = chunker.chunks(data, params)
    return {
        "op": "put", "op_id": op_id, "path": path, "base_rev": base_rev, "size": len(data),
        "mtime_ms": 1764547200000, "chunking": params,
        "chunks": [{"hash": c["hash"], "len": c["len"]} for c in chunks],
        "content_hash": content_hash(params, chunks),
    }, chunks


TAMPER_CHECK = True


def upload(api, ns, files, chunker):
    """Section 4. `files` is a list of (op_id, path, bytes, base_rev)."""
    ops, by_hash = [], {}
    for op_id, path, data, base in files:
        op, chunks = put_op(op_id, path, data, chunker, base)
        ops.append(op)
        for c in chunks:
            by_hash[c["hash"]] = data[c["offset"]:c["offset"] + c["len"]]
    opened = api.call("POST", f"/v1/namespaces/{ns}/uploads", {"files": ops})
    if not opened["needed"]:
        return opened["results"], None
    upload_id = opened["upload_id"]
    # One part holds every needed chunk, raw (less than 64 MiB here).
    body = b"".join(by_hash[h] for h in opened["needed"])
    part = {
        "part_number": 1, "size": len(body),
        "checksum_crc32c": base64.b64encode(crc32c(body).to_bytes(4, "big")).decode(),
        "chunks": [{"hash": h, "raw_len": len(by_hash[h]), "stored_len": len(by_hash[h]), "codec": "none"}
                   for h in opened["needed"]],
    }
    signed = api.call("POST", f"/v1/uploads/{upload_id}/parts", part)
    check(signed["method"] == "PUT", "parts are PUT")
    # A body that is not what was signed is refused by a store that checks
    # signed checksums (as S3 and Garage do).
    if TAMPER_CHECK:
        tampered = bytearray(body)
        tampered[0] ^= 1
        try:
            storage("PUT", signed["url"], signed["headers"], bytes(tampered))
            fail("storage took a part whose checksum differs from the signed one")
        except urllib.error.HTTPError as e:
            check(e.code in (400, 403), f"a tampered part got HTTP {e.code}")
    status, headers, _ = storage("PUT", signed["url"], signed["headers"], body)
    check(status == 200, f"part PUT answered {status}")
    etag = headers["ETag"]
    status = api.call("GET", f"/v1/uploads/{upload_id}")
    check([p["stored"] for p in status["parts"]] == [True], "the session sees its part stored")
    commit = {"parts": [{"part_number": 1, "etag": etag}]}
    first = api.call("POST", f"/v1/uploads/{upload_id}/commit", commit)
    again = api.call("POST", f"/v1/uploads/{upload_id}/commit", commit)
    check(first == again, "a retried commit answers the same")
    return first["results"], upload_id


def download(api, ns, path, chunker):
    """Section 5, every check included."""
    m = api.call("GET", f"/v1/namespaces/{ns}/manifest", query={"path": path})
    check(m["path"] == path, "the manifest names another file")
    at = 0
    for c in m["chunks"]:
        check(c["offset"] == at, "chunks do not tile the file")
        at += c["len"]
    check(at == m["size"], "chunk lengths do not add up")
    check(content_hash(m["chunking"], m["chunks"]) == m["content_hash"], "manifest content hash")
    want = {c["hash"]: c["len"] for c in m["chunks"]}
    got = {}
    for r in m["ranges"]:
        status, _, body = storage("GET", r["url"], r["headers"])
        check(status in (200, 206) and len(body) == r["length"], "a range came back short")
        for c in r["chunks"]:
            raw = decode(c["codec"], body[c["at"]:c["at"] + c["stored_len"]], c["raw_len"])
            check(blake3.blake3(raw).hexdigest() == c["hash"], "a chunk fails its hash")
            check(want.get(c["hash"]) == c["raw_len"], "a chunk of another length")
            got[c["hash"]] = raw
    check(set(got) == set(want), "the ranges miss chunks")
    return b"".join(got[c["hash"]] for c in m["chunks"]), m


def main():
    a = argparse.ArgumentParser()
    a.add_argument("--url", required=True)
    a.add_argument("--user", required=True)
    a.add_argument("--password", required=True)
    a.add_argument("--other", help="a file another client uploaded")
    a.add_argument("--other-hash", help="its bytes' BLAKE3")
    a.add_argument("--no-tamper-check", action="store_true",
                   help="the store does not check signed checksums (s3s-fs)")
    args = a.parse_args()
    global TAMPER_CHECK
    TAMPER_CHECK = not args.no_tamper_check

    with open(VECTORS) as f:
        vectors = json.load(f)
    chunker = Chunker(vectors)
    check_vectors(chunker, vectors)
    print("outside client: every vector of protocol/vectors.json reproduced")

    login = {"user": args.user, "password": args.password, "device_name": "outside-a"}
    api = Api(args.url, Api(args.url).call("POST", "/v1/login", login)["token"])
    bad = Api(args.url).call("POST", "/v1/login", dict(login, password="wrong"), expect=401)
    check(bad["code"] == "login_failed" and bad["retryable"] is False, "a wrong password")
    ns = next(n["id"] for n in api.call("GET", "/v1/namespaces") if n["home"])

    # A second device follows the folder from the start.
    other = Api(args.url, Api(args.url).call("POST", "/v1/login", dict(login, device_name="outside-b"))["token"])
    page = other.call("GET", f"/v1/namespaces/{ns}/changes")
    cursor = page["cursor"]
    while page["has_more"]:
        page = other.call("GET", f"/v1/namespaces/{ns}/changes", query={"cursor": cursor})
        cursor = page["cursor"]

    big = source_bytes({"blake3_xof": "outside client file", "len": 5 << 20})
    small = b"hello from outside\n" * 1000
    woke = {}
    waiter = threading.Thread(target=lambda: woke.update(other.call(
        "GET", f"/v1/namespaces/{ns}/changes/wait", query={"cursor": cursor, "timeout": 60})))
    waiter.start()
    results, _ = upload(api, ns, [("outside-1", "outside/big.bin", big, None),
                                  ("outside-2", "outside/small.txt", small, None)], chunker)
    check([r["status"] for r in results] == ["committed", "committed"], f"commit: {results}")
    rev_big = results[0]["rev"]
    waiter.join(70)
    check(woke.get("changed") is True, f"the long-poll did not wake: {woke}")

    entries = other.call("GET", f"/v1/namespaces/{ns}/changes", query={"cursor": cursor})["entries"]
    seen = {e["path"]: e for e in entries}
    check(seen["outside/big.bin"]["kind"] == "put" and seen["outside/big.bin"]["rev"] == rev_big,
          "the journal shows the put")
    back, m = download(other, ns, "outside/big.bin", chunker)
    check(back == big, "the downloaded bytes differ")
    check(len(m["chunks"]) >= 3, "a 5 MiB file of random bytes cuts into several chunks")

    # The same op again: the first answer. The same id for another op: refused.
    again, _ = upload(api, ns, [("outside-1", "outside/big.bin", big, None)], chunker)
    check(again[0]["status"] == "committed" and again[0]["rev"] == rev_big, f"retry: {again}")
    reused, _ = upload(api, ns, [("outside-1", "outside/other.bin", small, None)], chunker)
    check(reused[0]["status"] == "error" and reused[0]["code"] == "op_id_reused", f"reuse: {reused}")
    # An edit from a stale base is a conflict; from the current one it commits.
    stale, _ = upload(api, ns, [("outside-3", "outside/big.bin", small, rev_big - 1)], chunker)
    check(stale[0]["status"] == "conflict" and stale[0]["current_rev"] == rev_big, f"stale: {stale}")
    edit, _ = upload(api, ns, [("outside-4", "outside/big.bin", big[:4 << 20], rev_big)], chunker)
    check(edit[0]["status"] == "committed", f"edit: {edit}")
    history = api.call("GET", f"/v1/namespaces/{ns}/versions", query={"path": "outside/big.bin"})
    check([v["rev"] for v in history][:2] == [edit[0]["rev"], rev_big], f"history: {history}")
    # A malformed request: a problem document with a stable code.
    op, _ = put_op("outside-5", "outside/x.txt", small, chunker)
    op["content_hash"] = "not-a-hash"
    problem = api.call("POST", f"/v1/namespaces/{ns}/uploads", {"files": [op]}, expect=400)
    check(problem["retryable"] is False and problem["code"] in ("malformed_json", "hash_malformed"),
          f"malformed: {problem}")
    # A delete.
    gone = api.call("POST", f"/v1/namespaces/{ns}/uploads", {"files": [
        {"op": "delete", "op_id": "outside-6", "path": "outside/small.txt", "base_rev": results[1]["rev"]}]})
    check(gone["results"][0]["status"] == "committed", f"delete: {gone}")

    if args.other:
        data, _ = download(api, ns, args.other, chunker)
        check(blake3.blake3(data).hexdigest() == args.other_hash, "the other client's file differs")
        print(f"outside client: {args.other} from the other client verified ({len(data)} bytes)")
    print(json.dumps({"ok": True, "namespace": ns, "big_rev": rev_big, "edit_rev": edit[0]["rev"]}))


if __name__ == "__main__":
    main()

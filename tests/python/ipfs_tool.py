"""IPFS-side tools for the interop tests, written from the specs, sharing no
code with shoal:

  pack DIR OUT.car        a UnixFS CAR of DIR as `ipfs-car pack` makes one:
                          CIDv1, sha2-256, raw leaves of 256 KiB, File nodes
                          for larger files, dag-pb directories.
  verify CAR DIR          walks a CAR from its root (each block's hash
                          checked: blake3 or sha2-256; dag-pb and UnixFS
                          parsed here; plain and HAMT directories) and
                          compares every file with DIR; exits non-zero on
                          any difference or bad block.
  fetch URL OUT           GET URL (Accept: application/vnd.ipld.car) to OUT.
  flip IN OUT             IN with one byte of its last block flipped.
  xarray GATEWAY CID DIR  xr.open_zarr("ipfs://CID") through ipfsspec with
                          IPFS_GATEWAY=GATEWAY equals xr.open_zarr(DIR).
"""
import hashlib
import os
import sys

import blake3

SHA2_256, BLAKE3 = 0x12, 0x1E
RAW, DAG_PB = 0x55, 0x70


def varint(n):
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def read_varint(b, at):
    v = shift = 0
    while True:
        if at >= len(b):
            raise ValueError("truncated varint")
        x = b[at]
        at += 1
        v |= (x & 0x7F) << shift
        shift += 7
        if x < 0x80:
            return v, at


def cid_bytes(codec, data):
    return bytes([1]) + varint(codec) + bytes([SHA2_256, 32]) + hashlib.sha256(data).digest()


def parse_cid(b, at=0):
    """(codec, hash code, digest, end) of the CIDv1 at b[at:]."""
    version, at = read_varint(b, at)
    if version != 1:
        raise ValueError(f"CID version {version}")
    codec, at = read_varint(b, at)
    code, at = read_varint(b, at)
    n, at = read_varint(b, at)
    return codec, code, bytes(b[at:at + n]), at + n


def pb_fields(b):
    at = 0
    while at < len(b):
        key, at = read_varint(b, at)
        field, wire = key >> 3, key & 7
        if wire == 0:
            v, at = read_varint(b, at)
            yield field, v
        elif wire == 2:
            n, at = read_varint(b, at)
            if at + n > len(b):
                raise ValueError("field past the end")
            yield field, bytes(b[at:at + n])
            at += n
        else:
            raise ValueError(f"wire type {wire}")


def pb_bytes(field, b):
    return varint(field << 3 | 2) + varint(len(b)) + b


def pb_varint(field, v):
    return varint(field << 3) + varint(v)


def encode_node(links, data):
    out = b""
    for cid, name, tsize in links:
        out += pb_bytes(2, pb_bytes(1, cid) + pb_bytes(2, name.encode()) + pb_varint(3, tsize))
    return out + pb_bytes(1, data)


def decode_node(b):
    links, data = [], b""
    for f, v in pb_fields(b):
        if f == 2:
            link = {"name": ""}
            for lf, lv in pb_fields(v):
                if lf == 1:
                    link["cid"] = lv
                elif lf == 2:
                    link["name"] = lv.decode()
            links.append(link)
        elif f == 1:
            data = v
    return links, data


def unixfs(data):
    u = {"type": None, "data": b"", "blocksizes": []}
    for f, v in pb_fields(data):
        if f == 1:
            u["type"] = v
        elif f == 2:
            u["data"] = v
        elif f == 4:
            u["blocksizes"].append(v)
    return u


# ---- pack --------------------------------------------------------------

CHUNK = 256 << 10


def pack(directory, out):
    blocks = []

    def put(codec, data):
        c = cid_bytes(codec, data)
        blocks.append((c, data))
        return c

    def file_node(path):
        data = open(path, "rb").read()
        if len(data) <= CHUNK:
            return put(RAW, data), len(data)
        leaves = [data[i:i + CHUNK] for i in range(0, len(data), CHUNK)]
        links = [(put(RAW, leaf), "", len(leaf)) for leaf in leaves]
        meta = pb_varint(1, 2) + pb_varint(3, len(data)) + b"".join(pb_varint(4, len(x)) for x in leaves)
        node = encode_node(links, meta)
        return put(DAG_PB, node), len(node) + len(data)

    def dir_node(path):
        links = []
        for name in sorted(os.listdir(path), key=lambda n: n.encode()):
            p = os.path.join(path, name)
            c, size = dir_node(p) if os.path.isdir(p) else file_node(p)
            links.append((c, name, size))
        node = encode_node(links, pb_varint(1, 1))
        return put(DAG_PB, node), len(node) + sum(x[2] for x in links)

    root, _ = dir_node(directory)
    import dag_cbor
    from multiformats import CID
    header = dag_cbor.encode({"roots": [CID.decode(root)], "version": 1})
    with open(out, "wb") as f:
        f.write(varint(len(header)) + header)
        for c, data in reversed(blocks):
            f.write(varint(len(c) + len(data)) + c + data)
    print("ok", CID.decode(root))


# ---- verify ------------------------------------------------------------

def read_car(data):
    n, at = read_varint(data, 0)
    import dag_cbor
    header = dag_cbor.decode(bytes(data[at:at + n]))
    at += n
    roots = [bytes(r) for r in header["roots"]]
    blocks = {}
    while at < len(data):
        n, at = read_varint(data, at)
        if at + n > len(data):
            raise ValueError("truncated CAR")
        section = data[at:at + n]
        at += n
        codec, code, digest, end = parse_cid(section)
        body = bytes(section[end:])
        if code == BLAKE3:
            ok = blake3.blake3(body).digest() == digest
        elif code == SHA2_256:
            ok = hashlib.sha256(body).digest() == digest
        else:
            raise ValueError(f"hash code {code:#x}")
        if not ok:
            raise ValueError("a block does not match its CID")
        blocks[bytes(section[:end])] = (codec, body)
    return roots, blocks


def walk(blocks, cid, path, files):
    codec, body = blocks[cid]
    if codec == RAW:
        files[path] = body
        return
    links, data = decode_node(body)
    u = unixfs(data)
    if u["type"] == 1:  # directory
        for link in links:
            walk(blocks, link["cid"], f"{path}/{link['name']}".lstrip("/"), files)
    elif u["type"] == 5:  # HAMT shard: two hex digits, then the name at leaves
        for link in links:
            if len(link["name"]) == 2:
                walk(blocks, link["cid"], path, files)
            else:
                walk(blocks, link["cid"], f"{path}/{link['name'][2:]}".lstrip("/"), files)
    elif u["type"] in (0, 2):  # file
        out = bytearray(u["data"])
        for link in links:
            sub = {}
            walk(blocks, link["cid"], "f", sub)
            out += sub["f"]
        files[path] = bytes(out)
    else:
        raise ValueError(f"UnixFS type {u['type']}")


def verify(car, directory):
    roots, blocks = read_car(open(car, "rb").read())
    files = {}
    walk(blocks, roots[0], "", files)
    want = {}
    for base, _, names in os.walk(directory):
        for name in names:
            p = os.path.join(base, name)
            want[os.path.relpath(p, directory)] = open(p, "rb").read()
    if files != want:
        missing = sorted(set(want) - set(files))[:5]
        extra = sorted(set(files) - set(want))[:5]
        differ = sorted(k for k in set(want) & set(files) if want[k] != files[k])[:5]
        sys.exit(f"CAR differs from {directory}: missing {missing}, extra {extra}, differ {differ}")
    print(f"ok {len(files)} files, {len(blocks)} blocks")


def main():
    cmd = sys.argv[1]
    if cmd == "pack":
        pack(sys.argv[2], sys.argv[3])
    elif cmd == "verify":
        verify(sys.argv[2], sys.argv[3])
    elif cmd == "fetch":
        import requests
        r = requests.get(sys.argv[2], headers={"Accept": "application/vnd.ipld.car"}, timeout=60)
        if r.status_code != 200:
            sys.exit(f"status {r.status_code}: {r.text[:200]}")
        open(sys.argv[3], "wb").write(r.content)
        print("ok", r.headers.get("content-type"), r.headers.get("x-ipfs-roots"))
    elif cmd == "flip":
        data = bytearray(open(sys.argv[2], "rb").read())
        data[-3] ^= 0x01
        open(sys.argv[3], "wb").write(data)
        print("ok")
    elif cmd == "xarray":
        import warnings
        warnings.filterwarnings("ignore")
        os.environ["IPFS_GATEWAY"] = sys.argv[2]
        import xarray as xr
        got = xr.open_zarr(f"ipfs://{sys.argv[3]}").load()
        want = xr.open_zarr(sys.argv[4]).load()
        xr.testing.assert_identical(got, want)
        print("ok")
    else:
        sys.exit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()

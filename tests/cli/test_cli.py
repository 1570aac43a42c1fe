#!/usr/bin/python3
"""End-to-end tests of the `mpk` command-line tool.

Usage: test_cli.py MPK_BINARY CASE   (CASE: help, usage, roundtrip, metadata, corrupt, truncated,
missing, pack_errors, extract_errors, or all)

Each case works in its own temporary directory, makes .npy files with NumPy, runs mpk and checks
exit codes, stdout/stderr and the files written. Tensor checksums are checked independently
against libxxhash's XXH3_64bits through ctypes.
"""
import ctypes
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np

MPK = None
FAILURES = []


def run(*args, expect=None):
    """Runs mpk with args; returns (code, stdout, stderr). Checks the exit code when expect is set."""
    p = subprocess.run([MPK, *map(str, args)], capture_output=True, text=True, timeout=60)
    if expect is not None and p.returncode != expect:
        raise AssertionError(
            f"mpk {' '.join(map(str, args))}: exit {p.returncode}, expected {expect}\n"
            f"stdout:\n{p.stdout}\nstderr:\n{p.stderr}")
    return p.returncode, p.stdout, p.stderr


def check(cond, what):
    if not cond:
        raise AssertionError(what)


_xxh = None


def xxh3(data: bytes) -> str:
    global _xxh
    if _xxh is None:
        _xxh = ctypes.CDLL("libxxhash.so.0").XXH3_64bits
        _xxh.restype = ctypes.c_uint64
        _xxh.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
    return f"{_xxh(data, len(data)):016x}"


def listing(d):
    return sorted(os.path.relpath(os.path.join(r, f), d) for r, _, fs in os.walk(d) for f in fs)


# ---- fixtures ------------------------------------------------------------------------------------

def make_arrays():
    """name -> array; names with '/' live in subdirectories."""
    rng = np.random.default_rng(7)
    a = {
        "f64": rng.standard_normal((3, 4)),
        "f32": rng.standard_normal((5, 7)).astype(np.float32),
        "f16": rng.standard_normal((9,)).astype(np.float16),
        "i64": rng.integers(-2**62, 2**62, size=(2, 3, 4), dtype=np.int64),
        "i32": rng.integers(-2**31, 2**31 - 1, size=(6,), dtype=np.int32),
        "i16": rng.integers(-2**15, 2**15 - 1, size=(4, 2), dtype=np.int16),
        "i8": rng.integers(-128, 127, size=(10,), dtype=np.int8),
        "u64": rng.integers(0, 2**63, size=(3,), dtype=np.uint64),
        "u32": rng.integers(0, 2**32 - 1, size=(3,), dtype=np.uint32),
        "u16": rng.integers(0, 2**16 - 1, size=(2, 2), dtype=np.uint16),
        "u8": rng.integers(0, 255, size=(17,), dtype=np.uint8),
        "bool": rng.integers(0, 2, size=(3, 3)).astype(np.bool_),
        "scalar": np.array(2.5, dtype=np.float32),
        "empty": np.zeros((0, 3), dtype=np.float32),
        "nested/deeper/w": rng.standard_normal((4, 4)).astype(np.float32),
        "nested/b": np.arange(5, dtype=np.int64),
        "bigendian": np.arange(6, dtype=">f4").reshape(2, 3),
        "twin_a": np.arange(8, dtype=np.int32),
        "twin_b": np.arange(8, dtype=np.int32),
    }
    return a


def write_tree(root, arrays):
    for name, arr in arrays.items():
        path = os.path.join(root, name + ".npy")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        np.save(path, arr)
    with open(os.path.join(root, "README.txt"), "w") as f:
        f.write("not a tensor\n")
    os.makedirs(os.path.join(root, "nested"), exist_ok=True)
    with open(os.path.join(root, "nested", "notes.json"), "w") as f:
        f.write("{}\n")


def packed(tmp, arrays=None, extra=()):
    """Writes the arrays and packs them; returns (src_dir, mpk_path, arrays)."""
    arrays = make_arrays() if arrays is None else arrays
    src = os.path.join(tmp, "src")
    os.makedirs(src)
    write_tree(src, arrays)
    out = os.path.join(tmp, "model.mpk")
    _, stdout, stderr = run("pack", src, "-o", out, *extra, expect=0)
    check(stderr == "", f"pack printed to stderr while piped: {stderr!r}")
    check(f"packed {len(arrays)} tensors" in stdout, stdout)
    check("ignored 2 non-.npy files" in stdout, stdout)
    return src, out, arrays


def inspect_json(path):
    _, stdout, _ = run("inspect", path, "--json", expect=0)
    return json.loads(stdout)


# ---- cases ---------------------------------------------------------------------------------------

def case_help(tmp):
    _, out, _ = run("--help", expect=0)
    for word in ("inspect", "verify", "pack", "extract", "Exit codes", "usage error"):
        check(word in out, f"'{word}' missing from mpk --help:\n{out}")
    for sub in ("inspect", "verify", "pack", "extract", "convert"):
        _, out, _ = run(sub, "--help", expect=0)
        check(sub in out and "Exit codes" in out, f"mpk {sub} --help:\n{out}")
    _, out, _ = run("--version", expect=0)
    check(out.strip() != "", "empty --version")


def case_usage(tmp):
    f = os.path.join(tmp, "x.mpk")
    d = os.path.join(tmp, "d")
    os.makedirs(d)
    np.save(os.path.join(d, "a.npy"), np.arange(3))
    bad = [
        (),                                          # no subcommand
        ("frobnicate",),                             # unknown subcommand
        ("inspect",),                                # missing FILE
        ("inspect", f, "--bogus"),                   # unknown option
        ("verify", f, "--mode", "sideways"),         # bad choice
        ("verify", f, "--threads", "0"),             # out of range
        ("verify", f, "--threads", "many"),          # not a number
        ("pack", d),                                 # missing -o
        ("extract", f, "-o", "x.npy"),               # missing NAME
        ("pack", d, "-o", f, "--meta-int", "k=abc"),  # not an int
        ("pack", d, "-o", f, "--meta-int", "k=9223372036854775808"),  # int64 overflow
        ("pack", d, "-o", f, "--meta-float", "k=1.5x"),
        ("pack", d, "-o", f, "--meta-bool", "k=yes"),
        ("pack", d, "-o", f, "--meta", "novalue"),
        ("pack", d, "-o", f, "--meta", "=v"),
        ("pack", d, "-o", f, "--alignment", "3"),    # not a power of two
        ("pack", d, "-o", f, "--alignment", "131072"),  # over the maximum
    ]
    for args in bad:
        code, _, err = run(*args)
        check(code == 2, f"mpk {' '.join(args)}: exit {code}, expected 2; stderr: {err}")
        check(err.startswith("mpk: error: "), f"mpk {' '.join(args)}: stderr {err!r}")
    check(not os.path.exists(f), "a usage error created the output file")
    check(listing(tmp) == ["d/a.npy"], f"files left: {listing(tmp)}")


def case_roundtrip(tmp):
    src, out, arrays = packed(tmp, extra=["--meta", "arch=mlp", "--alignment", "128"])
    names = sorted(arrays)

    # inspect (text)
    _, text, _ = run("inspect", out, expect=0)
    for word in ("format:", "content id:", "mpk1-", "components (1)", "weights", "tensors (%d)" % len(names),
                 "arch", '"mlp"'):
        check(word in text, f"'{word}' missing from inspect:\n{text}")
    for n in names:
        check(f"\n  {n} " in text, f"tensor {n} missing from inspect:\n{text}")

    # inspect --json
    doc = inspect_json(out)
    check(doc["file_size"] == os.path.getsize(out), "file_size")
    check(doc["format_version"]["major"] == 1, "format major")
    check(doc["alignment"] == 128, f"alignment {doc['alignment']}")
    check(doc["content_id"].startswith("mpk1-") and len(doc["content_id"]) == 37, doc["content_id"])
    check(doc["header"]["size"] > 0 and doc["data"]["size"] >= sum(a.nbytes for a in arrays.values()),
          f"sections {doc['header']} {doc['data']}")
    tensors = {t["name"]: t for t in doc["tensors"]}
    check([t["name"] for t in doc["tensors"]] == names, f"tensor order {list(tensors)}")
    with open(out, "rb") as f:
        blob = f.read()
    for n, arr in arrays.items():
        t = tensors[n]
        le = np.ascontiguousarray(arr.astype(arr.dtype.newbyteorder("<")))
        want_dtype = {"float64": "f64", "float32": "f32", "float16": "f16", "int64": "i64", "int32": "i32",
                      "int16": "i16", "int8": "i8", "uint64": "u64", "uint32": "u32", "uint16": "u16",
                      "uint8": "u8", "bool": "bool"}[le.dtype.name]
        check(t["dtype"] == want_dtype, f"{n}: dtype {t['dtype']} != {want_dtype}")
        check(t["shape"] == list(arr.shape), f"{n}: shape {t['shape']} != {list(arr.shape)}")
        check(t["bytes"] == arr.nbytes and t["numel"] == arr.size, f"{n}: size")
        check(t["offset"] % 128 == 0 and t["alignment"] >= 128, f"{n}: offset {t['offset']}")
        check(t["alignment"] & (t["alignment"] - 1) == 0 and t["offset"] % t["alignment"] == 0,
              f"{n}: alignment {t['alignment']}")
        raw = le.tobytes()
        check(blob[t["offset"]:t["offset"] + t["bytes"]] == raw, f"{n}: bytes in the file differ")
        check(t["xxh3"] == xxh3(raw), f"{n}: xxh3 {t['xxh3']} != {xxh3(raw)}")
        check(t["component"] == "weights", f"{n}: component")
    check(tensors["twin_a"]["xxh3"] == tensors["twin_b"]["xxh3"], "equal tensors, different checksums")
    comp = doc["components"][0]
    check(comp["tensors"] == len(names) and comp["bytes"] == sum(a.nbytes for a in arrays.values()),
          f"component {comp}")

    # verify
    for mode in ("full", "header"):
        _, o, e = run("verify", out, "--mode", mode, expect=0)
        check(o.startswith("OK: ") and e == "", f"verify {mode}: {o!r} {e!r}")
    _, o, _ = run("verify", out, "--threads", "2", expect=0)
    check("%d tensors" % len(names) in o and "bytes" in o and "verified in " in o, o)

    # extract every tensor and compare with the source
    ext = os.path.join(tmp, "ext")
    os.makedirs(ext)
    for n, arr in arrays.items():
        dst = os.path.join(ext, n.replace("/", "_") + ".npy")
        _, o, e = run("extract", out, n, "-o", dst, expect=0)
        check(e == "", f"extract printed to stderr: {e!r}")
        got = np.load(dst, allow_pickle=False)
        want = arr.astype(arr.dtype.newbyteorder("<"))
        check(got.dtype == want.dtype, f"{n}: extracted dtype {got.dtype} != {want.dtype}")
        check(got.shape == arr.shape, f"{n}: extracted shape {got.shape} != {arr.shape}")
        check(np.array_equal(got, arr), f"{n}: extracted values differ")
        # Byte-identical to what np.save writes for the little-endian array.
        ref = os.path.join(tmp, "ref.npy")
        np.save(ref, want)
        with open(ref, "rb") as f1, open(dst, "rb") as f2:
            check(f1.read() == f2.read(), f"{n}: extracted file is not byte-identical to np.save's")
    check(sorted(os.listdir(ext)) == sorted(n.replace("/", "_") + ".npy" for n in arrays),
          f"stray files after extract: {os.listdir(ext)}")

    # pack is deterministic: the same input gives the same content id
    out2 = os.path.join(tmp, "again.mpk")
    run("pack", src, "-o", out2, "--meta", "arch=mlp", "--alignment", "128", expect=0)
    check(inspect_json(out2)["content_id"] == doc["content_id"], "content id differs between packs")

    # --verbose lists packed and ignored files on stderr
    _, _, e = run("pack", src, "-o", os.path.join(tmp, "v.mpk"), "--verbose", expect=0)
    check("README.txt" in e and "ignoring" in e and "packing" in e, f"--verbose: {e!r}")


def case_metadata(tmp):
    extra = ["--meta", "name=digits mlp", "--meta", "empty=", "--meta", "eq=a=b",
             "--meta-int", "layers=2", "--meta-int", "neg=-9223372036854775808",
             "--meta-float", "accuracy=0.9725", "--meta-float", "tiny=1e-300",
             "--meta-bool", "trained=true", "--meta-bool", "frozen=false",
             "--meta", "long=" + "x" * 500]
    _, out, _ = packed(tmp, arrays={"w": np.ones((2, 2), np.float32)}, extra=extra)
    doc = inspect_json(out)
    meta = {m["key"]: (m["type"], m["value"]) for m in doc["metadata"]}
    want = {
        "name": ("string", "digits mlp"), "empty": ("string", ""), "eq": ("string", "a=b"),
        "layers": ("int64", 2), "neg": ("int64", -9223372036854775808),
        "accuracy": ("float64", 0.9725), "tiny": ("float64", 1e-300),
        "trained": ("bool", True), "frozen": ("bool", False), "long": ("string", "x" * 500),
    }
    check(meta == want, f"metadata {meta}")
    check([m["key"] for m in doc["metadata"]] == sorted(want), "metadata not in key order")
    _, text, _ = run("inspect", out, expect=0)
    check("0.9725" in text and "digits mlp" in text and "true" in text, text)
    check("x" * 500 not in text and "(500 bytes)" in text, "long string not abbreviated in text mode")


def case_corrupt(tmp):
    _, out, arrays = packed(tmp)
    doc = inspect_json(out)
    victim = next(t for t in doc["tensors"] if t["name"] == "nested/deeper/w")
    with open(out, "r+b") as f:
        f.seek(victim["offset"] + 5)
        b = f.read(1)
        f.seek(victim["offset"] + 5)
        f.write(bytes([b[0] ^ 0x01]))
    for threads in ("1", "2"):
        code, o, e = run("verify", out, "--threads", threads)
        check(code == 1, f"verify of a corrupted file: exit {code}")
        check(e.startswith("mpk: error: MPK_ERR_CHECKSUM: ") and "nested/deeper/w" in e,
              f"verify stderr does not name the tensor: {e!r}")
        check(not o.startswith("OK"), o)
    # The header is intact: header-only verification passes.
    run("verify", out, "--mode", "header", expect=0)
    # Extract of the damaged tensor refuses and writes nothing; other tensors still extract.
    dst = os.path.join(tmp, "w.npy")
    code, _, e = run("extract", out, "nested/deeper/w", "-o", dst)
    check(code == 1 and "MPK_ERR_CHECKSUM" in e, f"extract of a damaged tensor: {code} {e!r}")
    check(not os.path.exists(dst), "extract left a file for a damaged tensor")
    run("extract", out, "f32", "-o", dst, expect=0)
    # Damage in the header is caught at open by every command.
    with open(out, "r+b") as f:
        f.seek(doc["header"]["offset"] + doc["header"]["size"] // 2)
        b = f.read(1)
        f.seek(doc["header"]["offset"] + doc["header"]["size"] // 2)
        f.write(bytes([b[0] ^ 0x40]))
    for args in (("verify", out), ("verify", out, "--mode", "header"), ("inspect", out),
                 ("inspect", out, "--json"), ("extract", out, "f32", "-o", dst + "2")):
        code, o, e = run(*args)
        check(code == 1 and e.startswith("mpk: error: MPK_ERR_"), f"{args}: {code} {e!r}")
    check(not os.path.exists(dst + "2"), "extract from a damaged file wrote output")


def case_many(tmp):
    """verify and inspect of several files: each reported in order, the exit code the worst."""
    _, good, _ = packed(tmp)
    doc = inspect_json(good)
    bad = os.path.join(tmp, "bad.mpk")
    data = bytearray(open(good, "rb").read())
    victim = next(t for t in doc["tensors"] if t["name"] == "f32")
    data[victim["offset"]] ^= 0x10
    open(bad, "wb").write(bytes(data))
    missing = os.path.join(tmp, "missing.mpk")
    # Text: an OK line per good file, an error per bad one, in order; exit 1 (invalid).
    code, o, e = run("verify", good, bad, good)
    check(code == 1, f"verify good bad good: exit {code}")
    check(o.splitlines() == [l for l in o.splitlines() if l.startswith(f"OK: {good}: ")] and len(o.splitlines()) == 2,
          f"verify stdout: {o!r}")
    check(e.startswith("mpk: error: MPK_ERR_CHECKSUM: ") and "'f32'" in e and e.count("\n") == 1, f"stderr {e!r}")
    run("verify", good, good, "--mode", "header", expect=0)
    # --json: one object per file, nothing on stderr, statuses and messages per file.
    code, o, e = run("verify", "--json", good, bad, missing, "-j", "2")
    check(code == 1 and e == "", f"verify --json: exit {code}, stderr {e!r}")
    lines = [json.loads(l) for l in o.splitlines()]
    check([l["file"] for l in lines] == [good, bad, missing], f"files {lines}")
    check([l["status"] for l in lines] == ["MPK_OK", "MPK_ERR_CHECKSUM", "MPK_ERR_NOT_FOUND"], f"statuses {lines}")
    check("verified" in lines[0]["message"] and "f32" in lines[1]["message"] and missing in lines[2]["message"],
          f"messages {lines}")
    # Hostile names must not break the JSON: a file name with a quote, a newline and invalid UTF-8.
    odd = os.path.join(tmp.encode(), b'q"\n\xff.mpk')
    shutil.copy(bad, odd)
    p = subprocess.run([MPK, "verify", "--json", odd], capture_output=True, timeout=60)
    one = json.loads(p.stdout)
    check(p.returncode == 1 and one["status"] == "MPK_ERR_CHECKSUM" and '"' in one["file"], f"odd name: {p.stdout!r}")
    # inspect: one document per file as JSON lines; a bad file gets a status object on its line.
    damaged = os.path.join(tmp, "header.mpk")
    data = bytearray(open(good, "rb").read())
    data[doc["header"]["offset"] + doc["header"]["size"] // 2] ^= 0x40
    open(damaged, "wb").write(bytes(data))
    code, o, e = run("inspect", "--json", good, damaged, bad)
    check(code == 1 and e == "", f"inspect --json: exit {code} {e!r}")
    docs = [json.loads(l) for l in o.splitlines()]
    check(len(docs) == 3 and docs[0]["content_id"] == doc["content_id"] == docs[2]["content_id"], f"{o!r}")
    check(docs[1]["status"].startswith("MPK_ERR_") and docs[1]["file"] == damaged, f"{docs[1]}")
    code, o, e = run("inspect", good, missing, good)
    check(code == 1 and o.count("content id:") == 2 and "MPK_ERR_NOT_FOUND" in e, f"inspect text: {code} {e!r}")


def case_sign(tmp):
    """keygen, sign, verify --pubkey, inspect: a signed file verifies with its key only, and every
    single-bit flip of it (sampled across the file: preamble, data, padding, header, trailer) fails."""
    _, good, _ = packed(tmp)
    key = os.path.join(tmp, "release")
    _, o, _ = run("keygen", "-o", key, expect=0)
    check("release.pub" in o and "ed25519:" in o, o)
    check(oct(os.stat(key).st_mode & 0o777) == "0o600", f"secret key mode {oct(os.stat(key).st_mode)}")
    code, _, e = run("keygen", "-o", key)
    check(code == 2 and "already exists" in e, f"keygen over an existing key: {code} {e!r}")
    run("keygen", "-o", key + "2", expect=0)
    before = open(good, "rb").read()
    code, _, e = run("verify", good, "--pubkey", key + ".pub")
    check(code == 1 and "MPK_ERR_SIGNATURE" in e and "not signed" in e, f"unsigned: {code} {e!r}")
    _, o, _ = run("sign", good, "--key", key, "--no-fsync", expect=0)
    after = open(good, "rb").read()
    check(len(after) == len(before) + 192 and after[:len(before)] == before, "sign must only append 192 bytes")
    _, o, _ = run("verify", good, "--pubkey", key + ".pub", expect=0)
    check("signed by ed25519:" in o, o)
    run("verify", good, "--pubkey", key + ".pub", "--mode", "header", expect=0)
    run("verify", good, "--pubkey", key + "2.pub", "--pubkey", key + ".pub", expect=0)
    code, _, e = run("verify", good, "--pubkey", key + "2.pub")
    check(code == 1 and "not a trusted key" in e, f"other key: {code} {e!r}")
    run("verify", good, expect=0)  # without --pubkey the trailer is ignored
    _, o, _ = run("inspect", good, expect=0)
    check("signature:" in o and "ed25519:" in o, o)
    doc = inspect_json(good)
    check(doc["signature"]["signed_bytes"] == len(before), f"{doc.get('signature')}")
    code, _, e = run("verify", good, "--pubkey", key)  # a secret key given as public
    check(code == 1 and "MPK_ERR_BAD_FORMAT" in e, f"{code} {e!r}")
    # Flips: every 7th byte, a bit each, across the whole signed file, all refused by full verify.
    flip = os.path.join(tmp, "flip.mpk")
    paths = []
    for i in range(0, len(after), 7):
        b = bytearray(after)
        b[i] ^= 1 << (i % 8)
        p = os.path.join(tmp, f"flip{i}.mpk")
        open(p, "wb").write(bytes(b))
        paths.append(p)
    code, o, e = run("verify", "--json", "--pubkey", key + ".pub", *paths)
    verdicts = [json.loads(l)["status"] for l in o.splitlines()]
    check(code == 1 and len(verdicts) == len(paths) and "MPK_OK" not in verdicts,
          f"flips accepted: {[p for p, v in zip(paths, verdicts) if v == 'MPK_OK'][:5]}")
    # A signed copy with -o, then a damaged file is not signed and no output appears.
    out = os.path.join(tmp, "copy.mpk")
    run("sign", good, "--key", key + "2", "-o", out, expect=0)
    run("verify", out, "--pubkey", key + "2.pub", expect=0)
    at = next(t["offset"] for t in doc["tensors"] if t["bytes"] > 0)  # inside a tensor
    open(flip, "wb").write(before[:at] + bytes([before[at] ^ 4]) + before[at + 1:])
    code, _, e = run("sign", flip, "--key", key, "-o", flip + ".signed")
    check(code == 1 and not os.path.exists(flip + ".signed"), f"damaged file signed: {code} {e!r}")


def case_truncated(tmp):
    _, out, _ = packed(tmp)
    with open(out, "rb") as f:
        blob = f.read()
    doc = inspect_json(out)
    cuts = [0, 1, 8, 40, doc["header"]["offset"] + doc["header"]["size"] // 2, doc["data"]["offset"],
            len(blob) // 2, len(blob) - 1]
    for n in cuts:
        t = os.path.join(tmp, f"cut{n}.mpk")
        with open(t, "wb") as f:
            f.write(blob[:n])
        for args in (("verify", t), ("inspect", t), ("inspect", t, "--json")):
            code, o, e = run(*args)
            check(code == 1, f"{args} of a file cut to {n} bytes: exit {code}, stderr {e!r}")
            check(e.startswith("mpk: error: MPK_ERR_") and t in e,
                  f"{args} of a file cut to {n} bytes: unclear message {e!r}")
            check(o == "", f"{args}: output for an invalid file: {o!r}")
    # A file that is not an .mpk at all.
    t = os.path.join(tmp, "x.npy")
    np.save(t, np.arange(100))
    code, _, e = run("verify", t)
    check(code == 1 and "MPK_ERR_BAD_MAGIC" in e, f"verify of a .npy: {code} {e!r}")


def case_missing(tmp):
    m = os.path.join(tmp, "nope.mpk")
    for args in (("verify", m), ("inspect", m), ("extract", m, "w", "-o", os.path.join(tmp, "o.npy"))):
        code, _, e = run(*args)
        check(code == 1 and e.startswith("mpk: error: MPK_ERR_NOT_FOUND: ") and m in e,
              f"{args}: {code} {e!r}")
    code, _, e = run("pack", os.path.join(tmp, "nodir"), "-o", m)
    check(code == 1 and "MPK_ERR_NOT_FOUND" in e, f"pack of a missing dir: {code} {e!r}")
    os.makedirs(os.path.join(tmp, "emptydir"))
    code, _, e = run("pack", os.path.join(tmp, "emptydir"), "-o", m)
    check(code == 1 and "no .npy files" in e, f"pack of an empty dir: {code} {e!r}")
    check(listing(tmp) == [], f"files left: {listing(tmp)}")


def case_pack_errors(tmp):
    src = os.path.join(tmp, "src")
    os.makedirs(os.path.join(src, "sub"))
    np.save(os.path.join(src, "a.npy"), np.arange(10, dtype=np.float32))
    np.save(os.path.join(src, "sub", "b.npy"), np.ones((3, 3)))
    before = listing(tmp)

    # Output directory does not exist: fails (I/O), leaves no file anywhere.
    code, _, e = run("pack", src, "-o", os.path.join(tmp, "no", "such", "dir", "m.mpk"))
    check(code == 3 and "MPK_ERR_IO" in e, f"pack into a missing dir: {code} {e!r}")
    check(listing(tmp) == before, f"files left: {listing(tmp)}")

    out = os.path.join(tmp, "out", "m.mpk")
    os.makedirs(os.path.dirname(out))
    bad_files = {
        "fortran.npy": (lambda p: np.save(p, np.asfortranarray(np.ones((2, 3)))), "MPK_ERR_BAD_FORMAT", 1),
        "object.npy": (lambda p: np.save(p, np.array([1, "x"], dtype=object), allow_pickle=True),
                       "MPK_ERR_BAD_DTYPE", 1),
        "strings.npy": (lambda p: np.save(p, np.array(["ab", "cd"])), "MPK_ERR_BAD_DTYPE", 1),
        "complex.npy": (lambda p: np.save(p, np.ones(3, np.complex64)), "MPK_ERR_BAD_DTYPE", 1),
        "truncated.npy": (lambda p: open(p, "wb").write(open(os.path.join(src, "a.npy"), "rb").read()[:-3]),
                          "MPK_ERR_TRUNCATED", 1),
        "long.npy": (lambda p: open(p, "wb").write(open(os.path.join(src, "a.npy"), "rb").read() + b"x"),
                     "MPK_ERR_SIZE_MISMATCH", 1),
        "garbage.npy": (lambda p: open(p, "wb").write(b"hello, world"), "MPK_ERR_BAD_MAGIC", 1),
    }
    for fname, (make, status, want) in bad_files.items():
        p = os.path.join(src, "sub", fname)
        make(p)
        code, o, e = run("pack", src, "-o", out)
        check(code == want and e.startswith(f"mpk: error: {status}: ") and fname in e,
              f"pack with {fname}: exit {code}, stderr {e!r}")
        check(os.listdir(os.path.dirname(out)) == [], f"pack with {fname} left {os.listdir(os.path.dirname(out))}")
        os.remove(p)
    # An existing output is replaced only by a complete new file.
    run("pack", src, "-o", out, expect=0)
    cid = inspect_json(out)["content_id"]
    np.save(os.path.join(src, "sub", "bad.npy"), np.asfortranarray(np.ones((2, 3))))
    code, _, _ = run("pack", src, "-o", out)
    check(code == 1, "pack with a bad file succeeded")
    check(inspect_json(out)["content_id"] == cid, "a failed pack changed the existing output")
    check(os.listdir(os.path.dirname(out)) == ["m.mpk"], f"left: {os.listdir(os.path.dirname(out))}")


def case_extract_errors(tmp):
    _, out, _ = packed(tmp)
    dst = os.path.join(tmp, "o.npy")
    code, _, e = run("extract", out, "no/such/tensor", "-o", dst)
    check(code == 1 and e.startswith("mpk: error: MPK_ERR_NOT_FOUND: ") and "no/such/tensor" in e,
          f"extract of a missing tensor: {code} {e!r}")
    code, _, e = run("extract", out, "f32", "-o", os.path.join(tmp, "no", "dir", "o.npy"))
    check(code == 3 and "MPK_ERR_IO" in e, f"extract into a missing dir: {code} {e!r}")
    # Extract over an existing file replaces it.
    with open(dst, "w") as f:
        f.write("old")
    run("extract", out, "u8", "-o", dst, expect=0)
    check(np.array_equal(np.load(dst), make_arrays()["u8"]), "extract did not replace the file")
    check(not any(n.startswith(".o.npy") for n in os.listdir(tmp)), f"temp files left: {os.listdir(tmp)}")


def case_convert(tmp):
    _, model, arrays = packed(tmp)
    st = os.path.join(tmp, "out.safetensors")
    _, out, err = run("convert", model, st, expect=0)
    check("converted" in out and err == "", f"convert: {out!r} {err!r}")
    with open(st, "rb") as f:
        blob = f.read()
    n = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8:8 + n])
    data = blob[8 + n:]
    for name, a in arrays.items():
        e = header[name]
        check(list(e["shape"]) == list(a.shape), f"{name}: shape {e['shape']} vs {a.shape}")
        b, end = e["data_offsets"]
        check(data[b:end] == np.ascontiguousarray(a).astype(a.dtype.newbyteorder("<")).tobytes(),
              f"{name}: bytes differ")
    back = os.path.join(tmp, "back.mpk")
    run("convert", st, back, "--no-fsync", expect=0)
    j1, j2 = inspect_json(model), inspect_json(back)
    check(j1["content_id"] == j2["content_id"], "content id changed through safetensors")
    meta = {m["key"]: m["value"] for m in j2["metadata"]}
    check(meta.get("convert.source_format") == "safetensors", f"provenance: {meta}")
    for t in ("1", "2"):  # one thread or a reader thread too: the same file
        again = os.path.join(tmp, f"back{t}.mpk")
        run("convert", st, again, "--no-fsync", "--threads", t, expect=0)
        with open(back, "rb") as f1, open(again, "rb") as f2:
            check(f1.read() == f2.read(), f"convert --threads {t} wrote a different file")
    code, _, e = run("convert", st, os.path.join(tmp, "t.mpk"), "--threads", "65")
    check(code == 2 and not os.path.exists(os.path.join(tmp, "t.mpk")), f"convert --threads 65: {code} {e!r}")
    code, _, e = run("convert", st, os.path.join(tmp, "a3.mpk"), "--alignment", "3")
    check(code == 2 and "power of two" in e and not os.path.exists(os.path.join(tmp, "a3.mpk")),
          f"convert --alignment 3: {code} {e!r}")
    code, _, e = run("convert", model, os.path.join(tmp, "x.onnx"))
    check(code != 0 and "MPK_ERR_INVALID_ARGUMENT" in e, f"unsupported target: {code} {e!r}")
    code, _, e = run("convert", model, os.path.join(tmp, "x.gguf"))  # GGUF has no bool tensors
    check(code == 1 and "MPK_ERR_BAD_DTYPE" in e and "'bool'" in e, f"bool tensor to gguf: {code} {e!r}")
    code, _, e = run("convert", os.path.join(tmp, "nope.safetensors"), os.path.join(tmp, "y.mpk"))
    check(code == 1 and "MPK_ERR_NOT_FOUND" in e, f"missing input: {code} {e!r}")
    check(not os.path.exists(os.path.join(tmp, "x.gguf")) and not os.path.exists(os.path.join(tmp, "x.onnx"))
          and not os.path.exists(os.path.join(tmp, "y.mpk")),
          "a failed convert left a file")



def case_convert_npz(tmp):
    import zipfile
    _, model, arrays = packed(tmp)
    _, out, _ = run("convert", "--help", expect=0)
    check("--deflate" in out and "--name" in out and "npz" in out, f"convert --help:\n{out}")
    stored, deflated = os.path.join(tmp, "out.npz"), os.path.join(tmp, "outd.npz")
    run("convert", model, stored, expect=0)
    run("convert", model, deflated, "--deflate", expect=0)
    for path, method in ((stored, zipfile.ZIP_STORED), (deflated, zipfile.ZIP_DEFLATED)):
        with zipfile.ZipFile(path) as z:
            check(all(i.compress_type == method for i in z.infolist()), f"{path}: methods")
        z = np.load(path)
        check(sorted(z.files) == sorted(arrays), f"{path}: members {sorted(z.files)}")
        for name, a in arrays.items():
            b = z[name]
            want = a.astype(a.dtype.newbyteorder("<"))
            check(b.dtype == want.dtype and b.shape == want.shape and b.tobytes() == want.tobytes(),
                  f"{path}: {name} differs")
    # numpy's own archive back to mpk: the same content id, provenance "npz".
    src = os.path.join(tmp, "numpy.npz")
    np.savez_compressed(src, **arrays)
    back = os.path.join(tmp, "back.mpk")
    run("convert", src, back, "--no-fsync", expect=0)
    check(inspect_json(model)["content_id"] == inspect_json(back)["content_id"], "content id changed through npz")
    meta = {m["key"]: m["value"] for m in inspect_json(back)["metadata"]}
    with open(src, "rb") as f:
        check(meta.get("convert.source_format") == "npz" and meta.get("convert.source_xxh3") == xxh3(f.read()),
              f"provenance: {meta}")
    # One .npy: named after the file or --name; a many-tensor model cannot become one .npy.
    one = os.path.join(tmp, "weights.npy")
    np.save(one, arrays["f32"])
    run("convert", one, os.path.join(tmp, "one.mpk"), expect=0)
    run("convert", one, os.path.join(tmp, "named.mpk"), "--name", "layer/0/w", expect=0)
    check([t["name"] for t in inspect_json(os.path.join(tmp, "one.mpk"))["tensors"]] == ["weights"], "npy stem")
    check([t["name"] for t in inspect_json(os.path.join(tmp, "named.mpk"))["tensors"]] == ["layer/0/w"], "--name")
    code, _, e = run("convert", model, os.path.join(tmp, "all.npy"))
    check(code == 2 and "MPK_ERR_INVALID_ARGUMENT" in e and ".npz" in e, f"many tensors to .npy: {code} {e!r}")
    bad = os.path.join(tmp, "bad.npz")
    with open(bad, "wb") as f:
        f.write(b"not a zip archive")
    code, _, e = run("convert", bad, os.path.join(tmp, "bad.mpk"))
    check(code == 1 and "MPK_ERR_BAD_MAGIC" in e, f"not a zip: {code} {e!r}")
    check(not os.path.exists(os.path.join(tmp, "all.npy")) and not os.path.exists(os.path.join(tmp, "bad.mpk")),
          "a failed convert left a file")


def case_convert_sharded(tmp):
    _, model, arrays = packed(tmp)
    _, out, _ = run("convert", "--help", expect=0)
    check("--max-shard-size" in out and "index.json" in out, f"convert --help:\n{out}")
    # Split by size: every shard within the limit unless a tensor alone is over it.
    a = os.path.join(tmp, "a")
    os.makedirs(a)
    index = os.path.join(a, "model.safetensors.index.json")
    _, out, err = run("convert", model, index, "--max-shard-size", "200", expect=0)
    check("converted" in out and err == "", f"convert: {out!r} {err!r}")
    with open(index) as f:
        text = f.read()
    ij = json.loads(text)
    check(text == json.dumps(ij, indent=2, sort_keys=True) + "\n", "index not in transformers' form")
    check(sorted(ij["weight_map"]) == sorted(arrays), f"weight_map: {sorted(ij['weight_map'])}")
    check(ij["metadata"]["total_size"] == sum(v.nbytes for v in arrays.values()), f"total_size {ij['metadata']}")
    shards = sorted(set(ij["weight_map"].values()))
    check(len(shards) > 1 and sorted(os.listdir(a)) == sorted(shards + ["model.safetensors.index.json"]),
          f"files: {sorted(os.listdir(a))}")
    for shard in shards:
        size = os.path.getsize(os.path.join(a, shard))
        with open(os.path.join(a, shard), "rb") as f:
            n = int.from_bytes(f.read(8), "little")
        big = [t for t, s in ij["weight_map"].items() if s == shard and arrays[t].nbytes > 200]
        check(size - 8 - n <= 200 or len(big) == 1, f"{shard}: {size - 8 - n} data bytes")
    # Joined again: the same tensors; exported again: the recorded shards, byte for byte.
    back = os.path.join(tmp, "back.mpk")
    run("convert", index, back, "--no-fsync", expect=0)
    check(inspect_json(model)["content_id"] == inspect_json(back)["content_id"], "content id changed through shards")
    b = os.path.join(tmp, "b")
    os.makedirs(b)
    run("convert", back, os.path.join(b, "model.safetensors.index.json"), expect=0)
    for name in os.listdir(a):
        with open(os.path.join(a, name), "rb") as f1, open(os.path.join(b, name), "rb") as f2:
            check(f1.read() == f2.read(), f"{name} differs after a round trip")
    # Bad sizes are usage errors; a hostile index is refused and leaves nothing.
    code, _, e = run("convert", model, index, "--max-shard-size", "5XB")
    check(code == 2 and "5XB" in e, f"bad size: {code} {e!r}")
    code, _, e = run("convert", model, os.path.join(tmp, "x.mpk"), "--max-shard-size", "5GB")
    check(code == 2 and "MPK_ERR_INVALID_ARGUMENT" in e, f"size for .mpk output: {code} {e!r}")
    with open(index, "w") as f:
        f.write('{"weight_map": {"x": "../model.mpk"}}')
    code, _, e = run("convert", index, os.path.join(tmp, "evil.mpk"))
    check(code == 1 and "MPK_ERR_BAD_NAME" in e and "../model.mpk" in e, f"traversal: {code} {e!r}")
    check(not os.path.exists(os.path.join(tmp, "x.mpk")) and not os.path.exists(os.path.join(tmp, "evil.mpk")),
          "a failed convert left a file")


def case_convert_progress(tmp):
    """On a terminal, convert draws a progress line on stderr and clears it; without one, nothing."""
    import pty
    import select
    big = os.path.join(tmp, "big.npy")
    np.save(big, np.arange(6 << 20, dtype=np.float32))  # 24 MiB: several 4 MiB steps
    out = os.path.join(tmp, "big.mpk")
    pid, fd = pty.fork()
    if pid == 0:  # child: stdout and stderr are the pty
        os.execv(MPK, [MPK, "convert", big, out, "--no-fsync"])
    chunks = []
    while True:
        r, _, _ = select.select([fd], [], [], 60)
        if not r:
            break
        try:
            data = os.read(fd, 4096)
        except OSError:  # the child closed the pty
            break
        if not data:
            break
        chunks.append(data)
    _, status = os.waitpid(pid, 0)
    text = b"".join(chunks).decode("utf-8", "replace")
    check(os.WEXITSTATUS(status) == 0, f"convert on a tty failed: {text!r}")
    check("converting" in text and "%" in text and "MiB / " in text, f"no progress line: {text!r}")
    check("\r\033[K" in text, f"progress line not cleared: {text!r}")
    check("converted" in text, f"no summary: {text!r}")
    # Without a terminal (as in every other case) stderr stays empty.
    _, o, e = run("convert", big, os.path.join(tmp, "again.mpk"), "--no-fsync", expect=0)
    check(e == "", f"progress without a terminal: {e!r}")


def case_compress(tmp):
    """mpk compress / decompress: smaller file, same content id and tensors, verify passes, inspect
    shows encoding and ratio; bad options are usage errors; a damaged input leaves no output."""
    d = os.path.join(tmp, "in")
    rng = np.random.default_rng(3)
    arrays = {
        "w": (rng.standard_normal((512, 300)) * 0.02).astype(np.float32),
        "h": (rng.standard_normal((700, 33)) * 0.02).astype(np.float16),
        "ids": rng.integers(0, 5, size=20000).astype(np.int32),
        "tiny": np.arange(7, dtype=np.int64),
    }
    write_tree(d, arrays)
    model = os.path.join(tmp, "m.mpk")
    run("pack", d, "-o", model, "--no-fsync", expect=0)
    z = os.path.join(tmp, "z.mpk")
    _, out, err = run("compress", model, z, "--chunk-size", "64KiB", "--no-fsync", expect=0)
    check("compressed" in out and err == "", f"compress output: {out!r} {err!r}")
    check(os.path.getsize(z) < os.path.getsize(model), "compressed file is not smaller")
    run("verify", z, expect=0)
    j1, j2 = inspect_json(model), inspect_json(z)
    check(j1["content_id"] == j2["content_id"], "content id changed")
    check(j2["features"]["incompatible"] & 1, "feature bit 0 not set")
    enc = {t["name"]: t["encoding"] for t in j2["tensors"]}
    check(enc["w"]["name"] == "chunked" and enc["w"]["chunk_size"] == 65536 and enc["w"]["ratio"] < 0.9,
          f"w: {enc['w']}")
    check(enc["tiny"]["name"] == "raw", f"tiny: {enc['tiny']}")
    check(j2["tensor_bytes"]["stored"] < j2["tensor_bytes"]["decoded"], f"{j2['tensor_bytes']}")
    _, text, _ = run("inspect", z, expect=0)
    check("planes" in text and "ratio" in text and "tensor bytes:" in text, f"inspect text: {text!r}")
    for name, a in arrays.items():  # every tensor reads back bit for bit
        npy = os.path.join(tmp, name + ".npy")
        run("extract", z, name, "-o", npy, expect=0)
        check(np.array_equal(np.load(npy), a), f"{name} differs after compress")
    for codec in ("zstd", "float", "raw"):
        zc = os.path.join(tmp, f"{codec}.mpk")
        run("compress", model, zc, "--codec", codec, "--level", "5", "--threads", "1", "--no-fsync", expect=0)
        check(inspect_json(zc)["content_id"] == j1["content_id"], f"--codec {codec}: content id")
    # convert --compress: a safetensors import straight into a compressed .mpk, same content id.
    st = os.path.join(tmp, "m.safetensors")
    run("convert", model, st, "--no-fsync", expect=0)
    zc = os.path.join(tmp, "conv.mpk")
    run("convert", st, zc, "--compress", "auto", "--no-fsync", expect=0)
    jc = inspect_json(zc)
    check(jc["content_id"] == j1["content_id"] and jc["tensor_bytes"]["stored"] < jc["tensor_bytes"]["decoded"],
          f"convert --compress: {jc['tensor_bytes']}")
    back = os.path.join(tmp, "back.mpk")
    run("decompress", z, back, "--no-fsync", expect=0)
    with open(model, "rb") as f1, open(back, "rb") as f2:
        check(f1.read() == f2.read(), "decompress did not give back the packed file byte for byte")
    for bad in (("--codec", "lz4"), ("--level", "0"), ("--level", "20"), ("--chunk-size", "65MiB"),
                ("--chunk-size", "lots")):
        code, _, e = run("compress", model, os.path.join(tmp, "x.mpk"), *bad)
        check(code == 2 and not os.path.exists(os.path.join(tmp, "x.mpk")), f"compress {bad}: {code} {e!r}")
    # A damaged chunk: decompress refuses with the tensor and chunk named, and writes nothing.
    blob = bytearray(open(z, "rb").read())
    w = next(t for t in j2["tensors"] if t["name"] == "w")
    blob[w["offset"] + 100] ^= 0x10
    bad = os.path.join(tmp, "bad.mpk")
    open(bad, "wb").write(blob)
    code, _, e = run("decompress", bad, os.path.join(tmp, "y.mpk"))
    check(code == 1 and "MPK_ERR_CHECKSUM" in e and "chunk 0" in e and not os.path.exists(os.path.join(tmp, "y.mpk")),
          f"damaged chunk: {code} {e!r}")
    code, _, e = run("verify", bad)
    check(code != 0 and "chunk 0" in e, f"verify damaged: {code} {e!r}")


def case_patch(tmp):
    """mpk diff / mpk patch: byte-identical result, --reverse with --two-way, a chain, a wrong base
    (exit 1, MPK_ERR_WRONG_BASE, no output), inspect of a patch, usage errors."""
    rng = np.random.default_rng(5)
    v1 = {"w": (rng.standard_normal((256, 300)) * 0.02).astype(np.float32),
          "b": (rng.standard_normal(300) * 0.01).astype(np.float32),
          "gone": np.arange(50, dtype=np.int64)}
    v2 = {"w": v1["w"] + (rng.standard_normal((256, 300)) * 1e-4).astype(np.float32), "b": v1["b"],
          "added": np.arange(9, dtype=np.int16)}
    v3 = dict(v2, w=v2["w"] + (rng.standard_normal((256, 300)) * 1e-4).astype(np.float32))
    paths = {}
    for name, arrays in (("v1", v1), ("v2", v2), ("v3", v3)):
        d = os.path.join(tmp, name)
        write_tree(d, arrays)
        paths[name] = os.path.join(tmp, name + ".mpk")
        run("pack", d, "-o", paths[name], "--no-fsync", expect=0)
    p12, p23 = os.path.join(tmp, "p12.mpkd"), os.path.join(tmp, "p23.mpkd")
    _, out, err = run("diff", paths["v1"], paths["v2"], "-o", p12, "--no-fsync", expect=0)
    check("wrote" in out and ("1 sub deltas" in out or "1 xor deltas" in out), f"diff output: {out!r}")
    check(os.path.getsize(p12) < os.path.getsize(paths["v2"]), "the patch is not smaller than the model")
    run("diff", paths["v2"], paths["v3"], "-o", p23, "--two-way", "--level", "6", "--no-fsync", expect=0)
    o = os.path.join(tmp, "o.mpk")
    run("patch", paths["v1"], p12, "-o", o, "--no-fsync", expect=0)
    check(open(o, "rb").read() == open(paths["v2"], "rb").read(), "v1 + p12 is not v2 byte for byte")
    run("patch", paths["v1"], p12, p23, "-o", o, "--no-fsync", expect=0)
    check(open(o, "rb").read() == open(paths["v3"], "rb").read(), "v1 + p12 + p23 is not v3")
    run("patch", "--reverse", paths["v3"], p23, "-o", o, "--no-fsync", expect=0)
    check(open(o, "rb").read() == open(paths["v2"], "rb").read(), "v3 - p23 is not v2")
    os.remove(o)
    code, _, e = run("patch", "--reverse", paths["v2"], p12, "-o", o)  # one-way: 'gone' is not in it
    check(code == 1 and "MPK_ERR_UNSUPPORTED_FEATURE" in e and "'gone'" in e and not os.path.exists(o),
          f"one-way reverse: {code} {e!r}")
    code, _, e = run("patch", paths["v1"], p23, "-o", o)
    check(code == 1 and "MPK_ERR_WRONG_BASE" in e and not os.path.exists(o), f"wrong base: {code} {e!r}")
    _, text, _ = run("inspect", p23, expect=0)
    check("patch:" in text and "(two-way)" in text and "operations:" in text, f"inspect patch: {text!r}")
    # At --level 9 a one-way diff orders the f32 deltas by the base's exponents (SUB_SORTED) where
    # that pays (weights over three decades, each moved by about the same amount): it applies byte
    # for byte, and --reverse is refused naming the tensor (its order is the base's).
    mag = np.exp(rng.uniform(np.log(1e-3), 0.0, (512, 300))) * rng.choice([-1.0, 1.0], (512, 300))
    for name, arr in (("s1", mag), ("s2", mag + rng.standard_normal((512, 300)) * 2e-4)):
        d = os.path.join(tmp, name)
        write_tree(d, {"w": arr.astype(np.float32)})
        paths[name] = os.path.join(tmp, name + ".mpk")
        run("pack", d, "-o", paths[name], "--no-fsync", expect=0)
    ps = os.path.join(tmp, "ps.mpkd")
    _, out, _ = run("diff", paths["s1"], paths["s2"], "-o", ps, "--level", "9", "--no-fsync", expect=0)
    check("1 sorted sub deltas" in out and "1 not reversible" in out, f"diff --level 9 output: {out!r}")
    _, text, _ = run("inspect", ps, expect=0)
    check("(one-way)" in text and "1 sorted sub" in text, f"inspect sorted patch: {text!r}")
    run("patch", paths["s1"], ps, "-o", o, "--no-fsync", expect=0)
    check(open(o, "rb").read() == open(paths["s2"], "rb").read(), "s1 + ps is not s2")
    os.remove(o)
    code, _, e = run("patch", "--reverse", paths["s2"], ps, "-o", o)
    check(code == 1 and "MPK_ERR_UNSUPPORTED_FEATURE" in e and "'w'" in e and "--two-way" in e
          and not os.path.exists(o), f"reverse of a sorted patch: {code} {e!r}")
    # A change of rank 3 (plus a little noise), as a fine-tune's mostly is: at --level 9 the delta is
    # taken against the base plus a fitted low-rank product (one-way), far smaller than without.
    low = v1["w"] + ((rng.standard_normal((256, 3)) @ rng.standard_normal((3, 300))) * 1e-3
                     + rng.standard_normal((256, 300)) * 1e-6).astype(np.float32)
    d = os.path.join(tmp, "vl")
    write_tree(d, dict(v1, w=low.astype(np.float32)))
    paths["vl"] = os.path.join(tmp, "vl.mpk")
    run("pack", d, "-o", paths["vl"], "--no-fsync", expect=0)
    pl, pn = os.path.join(tmp, "pl.mpkd"), os.path.join(tmp, "pn.mpkd")
    _, out, _ = run("diff", paths["v1"], paths["vl"], "-o", pl, "--level", "9", "--no-fsync", expect=0)
    check("1 of the deltas against a low-rank prediction" in out and "1 not reversible" in out,
          f"diff --level 9 of a low-rank change: {out!r}")
    _, out, _ = run("diff", paths["v1"], paths["vl"], "-o", pn, "--level", "9", "--no-low-rank", "--no-fsync", expect=0)
    check("low-rank" not in out, f"diff --no-low-rank: {out!r}")
    check(os.path.getsize(pl) < 0.8 * os.path.getsize(pn),
          f"the low-rank patch ({os.path.getsize(pl)} B) is not well under the plain one ({os.path.getsize(pn)} B)")
    _, text, _ = run("inspect", pl, expect=0)
    check("1 against a low-rank prediction" in text, f"inspect low-rank patch: {text!r}")
    run("patch", paths["v1"], pl, "-o", o, "--no-fsync", expect=0)
    check(open(o, "rb").read() == open(paths["vl"], "rb").read(), "v1 + pl is not vl")
    os.remove(o)
    code, _, e = run("patch", "--reverse", paths["vl"], pl, "-o", o)
    check(code == 1 and "MPK_ERR_UNSUPPORTED_FEATURE" in e and "'w'" in e and not os.path.exists(o),
          f"reverse of a low-rank patch: {code} {e!r}")
    # A vocabulary grown by 20 rows (and every weight nudged): the shared rows are a delta against
    # the smaller base tensor, and the two-way patch rolls back.
    grown = np.concatenate([v1["w"] + (rng.standard_normal((256, 300)) * 1e-4).astype(np.float32),
                            (rng.standard_normal((20, 300)) * 0.02).astype(np.float32)])
    d = os.path.join(tmp, "vg")
    write_tree(d, dict(v1, w=grown))
    paths["vg"] = os.path.join(tmp, "vg.mpk")
    run("pack", d, "-o", paths["vg"], "--no-fsync", expect=0)
    pg = os.path.join(tmp, "pg.mpkd")
    _, out, _ = run("diff", paths["v1"], paths["vg"], "-o", pg, "--two-way", "--no-fsync", expect=0)
    check("(1 of them resized)" in out and "(two-way)" in out, f"diff of a grown tensor: {out!r}")
    # (~0.65 of the file as a delta; whole, the compressed tensor would be ~0.83)
    check(os.path.getsize(pg) < 0.75 * os.path.getsize(paths["vg"]), "the grown tensor's patch is not a delta")
    _, text, _ = run("inspect", pg, expect=0)
    check("(1 of the deltas resized)" in text, f"inspect resized patch: {text!r}")
    run("patch", paths["v1"], pg, "-o", o, "--no-fsync", expect=0)
    check(open(o, "rb").read() == open(paths["vg"], "rb").read(), "v1 + pg is not vg")
    run("patch", "--reverse", paths["vg"], pg, "-o", o, "--no-fsync", expect=0)
    check(open(o, "rb").read() == open(paths["v1"], "rb").read(), "vg - pg is not v1")
    os.remove(o)
    run("verify", p23, expect=0)
    for bad in (("diff", paths["v1"], paths["v2"]), ("diff", paths["v1"], paths["v2"], "-o", o, "--level", "0"),
                ("patch", paths["v1"], "-o", o)):
        code, _, e = run(*bad)
        check(code == 2 and not os.path.exists(o), f"{bad}: {code} {e!r}")
    # A truncated patch: refused, no output.
    t = os.path.join(tmp, "t.mpkd")
    open(t, "wb").write(open(p12, "rb").read()[:-100])
    code, _, e = run("patch", paths["v1"], t, "-o", o)
    check(code == 1 and "MPK_ERR_TRUNCATED" in e and not os.path.exists(o), f"truncated patch: {code} {e!r}")
    # Quantized models (int8 per channel): an update of the quantized model, and a rollback.
    q1, q2, pq = (os.path.join(tmp, n) for n in ("q1.mpk", "q2.mpk", "pq.mpkd"))
    run("quantize", paths["v1"], q1, "--to", "int8", "-q", "--no-fsync", expect=0)
    run("quantize", paths["v2"], q2, "--to", "int8", "-q", "--no-fsync", expect=0)
    run("diff", q1, q2, "-o", pq, "--two-way", "--no-fsync", expect=0)
    run("patch", q1, pq, "-o", o, "--no-fsync", expect=0)
    check(open(o, "rb").read() == open(q2, "rb").read(), "q1 + pq is not q2 byte for byte")
    run("patch", "--reverse", q2, pq, "-o", o, "--no-fsync", expect=0)
    check(open(o, "rb").read() == open(q1, "rb").read(), "q2 - pq is not q1 byte for byte")
    os.remove(o)
    code, _, e = run("patch", paths["v1"], pq, "-o", o)  # the f32 model is not the quantized base
    check(code == 1 and "MPK_ERR_WRONG_BASE" in e and not os.path.exists(o), f"quantized wrong base: {code} {e!r}")


def case_run(tmp):
    """mpk run --arch mlp: logits equal NumPy's forward pass (f32), int8 weights close to it, --output
    writes them, --profile lists every node; no graph, a bad input dtype or architecture: an error
    and no output file."""
    rng = np.random.default_rng(3)
    w1, b1 = rng.standard_normal((16, 8)).astype(np.float32), rng.standard_normal(16).astype(np.float32)
    w2, b2 = rng.standard_normal((3, 16)).astype(np.float32), rng.standard_normal(3).astype(np.float32)
    d = os.path.join(tmp, "m")
    write_tree(d, {"fc1/weight": w1, "fc1/bias": b1, "fc2/weight": w2, "fc2/bias": b2})
    model, qmodel = os.path.join(tmp, "m.mpk"), os.path.join(tmp, "q.mpk")
    run("pack", d, "-o", model, "--no-fsync", expect=0)
    x = rng.standard_normal((5, 8)).astype(np.float32)
    xp, yp = os.path.join(tmp, "x.npy"), os.path.join(tmp, "y.npy")
    np.save(xp, x)
    want = np.maximum(x.astype(np.float64) @ w1.T + b1, 0) @ w2.T + b2
    _, out, _ = run("run", model, "--arch", "mlp", "--input", xp, "-o", yp, "--profile", "--no-fsync", expect=0)
    got = np.load(yp)
    check(got.shape == (5, 3) and got.dtype == np.float32, f"run output {got.shape} {got.dtype}")
    check(np.allclose(got, want, rtol=1e-5, atol=1e-5), f"f32 logits differ: {np.abs(got - want).max()}")
    check("fc1:relu" in out and "profile (3 nodes)" in out, f"profile: {out!r}")
    run("quantize", model, qmodel, "--to", "int8", "-q", "--no-fsync", expect=0)
    run("run", qmodel, "--arch", "mlp", "--input", xp, "-o", yp, "-q", "--no-fsync", expect=0)
    got = np.load(yp)
    err = np.abs(got - want).max() / np.abs(want).max()
    check(err < 0.05, f"int8 logits too far from f32: {err}")
    cfg = os.path.join(tmp, "c.json")
    open(cfg, "w").write('{"layers": ["fc1", "fc2"], "activation": "tanh"}')
    run("run", model, "--arch", "mlp", "--config", cfg, "--input", xp, "-o", yp, "-q", "--no-fsync", expect=0)
    check(np.allclose(np.load(yp), np.tanh(x @ w1.T + b1) @ w2.T + b2, rtol=1e-5, atol=1e-5), "tanh config ignored")
    os.remove(yp)
    code, _, e = run("run", model, "--input", xp, "-o", yp)
    check(code == 1 and "has no graph" in e and not os.path.exists(yp), f"no graph: {code} {e!r}")
    ip = os.path.join(tmp, "i.npy")
    np.save(ip, np.arange(8, dtype=np.int16).reshape(1, 8))
    code, _, e = run("run", model, "--arch", "mlp", "--input", ip, "-o", yp)
    check(code != 0 and "MPK_ERR_BAD_DTYPE" in e and not os.path.exists(yp), f"int16 input: {code} {e!r}")
    np.save(ip, np.ones((2, 7), dtype=np.float32))
    code, _, e = run("run", model, "--arch", "mlp", "--input", ip, "-o", yp)
    check(code != 0 and "MPK_ERR_BAD_SHAPE" in e and not os.path.exists(yp), f"bad shape: {code} {e!r}")
    code, _, e = run("run", model, "--arch", "gpt9", "--input", xp, "-o", yp)
    check(code != 0 and "unknown architecture" in e and not os.path.exists(yp), f"bad arch: {code} {e!r}")


def _write_safetensors(path, arrays, metadata):
    """f32 arrays as a safetensors file, in the reference layout of tests/convert/make_safetensors.py."""
    sys.dont_write_bytecode = True  # leave no __pycache__ in tests/convert/
    spec = importlib.util.spec_from_file_location(
        "make_safetensors", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "convert", "make_safetensors.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    items = {k: ("F32", list(a.shape), np.ascontiguousarray(a, dtype="<f4").tobytes()) for k, a in arrays.items()}
    with open(path, "wb") as f:
        f.write(mod.serialize(items, metadata))


def _gpt2_logits(w, ids, n_layer, n_head):
    """GPT-2 forward in NumPy (float64), Hugging Face layout: Conv1D weights [in, out], tied lm_head."""
    x = w["wte.weight"][ids].astype(np.float64) + w["wpe.weight"][: len(ids)]
    T, C = x.shape
    D = C // n_head

    def ln(a, n):
        m = a.mean(-1, keepdims=True)
        v = ((a - m) ** 2).mean(-1, keepdims=True)
        return (a - m) / np.sqrt(v + 1e-5) * w[n + ".weight"] + w[n + ".bias"]

    mask = np.triu(np.full((T, T), -np.inf), 1)
    for i in range(n_layer):
        h = f"h.{i}."
        qkv = ln(x, h + "ln_1") @ w[h + "attn.c_attn.weight"] + w[h + "attn.c_attn.bias"]
        q, k, v = np.split(qkv, 3, axis=-1)
        out = np.zeros_like(q)
        for j in range(n_head):
            sl = slice(j * D, (j + 1) * D)
            s = q[:, sl] @ k[:, sl].T / np.sqrt(D) + mask
            p = np.exp(s - s.max(-1, keepdims=True))
            out[:, sl] = (p / p.sum(-1, keepdims=True)) @ v[:, sl]
        x = x + out @ w[h + "attn.c_proj.weight"] + w[h + "attn.c_proj.bias"]
        f = ln(x, h + "ln_2") @ w[h + "mlp.c_fc.weight"] + w[h + "mlp.c_fc.bias"]
        f = 0.5 * f * (1 + np.tanh(np.sqrt(2 / np.pi) * (f + 0.044715 * f ** 3)))
        x = x + f @ w[h + "mlp.c_proj.weight"] + w[h + "mlp.c_proj.bias"]
    return ln(x, "ln_f") @ w["wte.weight"].T


def case_gpt2(tmp):
    """mpk convert --arch gpt2 --config attaches a graph; mpk run gives NumPy's logits; mpk generate
    (greedy) gives NumPy's greedy continuation, by ids and as text through the vocabulary in the
    metadata; a config that does not fit the weights is refused and writes nothing."""
    rng = np.random.default_rng(9)
    L, H, C, V, P = 2, 2, 16, 11, 32
    chars = "abcdefghij "
    w = {"wte.weight": rng.standard_normal((V, C)) * 0.5, "wpe.weight": rng.standard_normal((P, C)) * 0.2,
         "ln_f.weight": 1 + rng.standard_normal(C) * 0.1, "ln_f.bias": rng.standard_normal(C) * 0.1}
    for i in range(L):
        h = f"h.{i}."
        for n, shp in (("ln_1.weight", (C,)), ("ln_1.bias", (C,)), ("attn.c_attn.weight", (C, 3 * C)),
                       ("attn.c_attn.bias", (3 * C,)), ("attn.c_proj.weight", (C, C)), ("attn.c_proj.bias", (C,)),
                       ("ln_2.weight", (C,)), ("ln_2.bias", (C,)), ("mlp.c_fc.weight", (C, 4 * C)),
                       ("mlp.c_fc.bias", (4 * C,)), ("mlp.c_proj.weight", (4 * C, C)), ("mlp.c_proj.bias", (C,))):
            w[h + n] = rng.standard_normal(shp) * 0.3 + (1.0 if n.endswith("ln_1.weight") or n.endswith("ln_2.weight") else 0)
    w = {k: v.astype(np.float32) for k, v in w.items()}
    st, cfg, model = (os.path.join(tmp, n) for n in ("m.safetensors", "config.json", "m.mpk"))
    _write_safetensors(st, w, {"tokenizer.chars": chars})
    json.dump({"n_layer": L, "n_head": H, "n_embd": C, "n_positions": P, "vocab_size": V,
               "layer_norm_epsilon": 1e-5, "activation_function": "gelu_new"}, open(cfg, "w"))
    run("convert", st, model, "--arch", "gpt2", "--config", cfg, "--no-fsync", expect=0)
    check(not [f for f in os.listdir(tmp) if ".tmp-" in f], f"temporary files left: {os.listdir(tmp)}")
    doc = inspect_json(model)
    check(any(c["kind"] == "graph" for c in doc["components"]), f"no graph component: {doc['components']}")
    ids = np.array([1, 4, 4, 0, 9, 2], dtype=np.int64)
    ip, yp = os.path.join(tmp, "ids.npy"), os.path.join(tmp, "y.npy")
    np.save(ip, ids)
    run("run", model, "--input", ip, "-o", yp, "-q", "--no-fsync", expect=0)
    want = _gpt2_logits(w, ids, L, H)
    got = np.load(yp)
    check(got.shape == (len(ids), V) and np.allclose(got, want, rtol=1e-4, atol=1e-4),
          f"gpt2 logits differ: {np.abs(got - want).max() if got.shape == want.shape else got.shape}")
    # The template's second output: the last position alone (what generate asks for).
    run("run", model, "--input", ip, "-o", yp, "--output-name", "next_logits", "-q", "--no-fsync", expect=0)
    got = np.load(yp)
    check(got.shape == (1, V) and np.allclose(got, want[-1:], rtol=1e-4, atol=1e-4), f"next_logits: {got.shape}")
    code, _, e = run("run", model, "--input", ip, "--output-name", "nope", "-q")
    check(code != 0 and "'nope'" in e, f"unknown output: {code} {e!r}")
    # Greedy generation: each step's argmax of the last row, fed back.
    seq, gen = list(ids), []
    for _ in range(6):
        nxt = int(np.argmax(_gpt2_logits(w, np.array(seq), L, H)[-1]))
        gen.append(nxt)
        seq.append(nxt)
    _, out, _ = run("generate", model, "--prompt-ids", ",".join(map(str, ids)), "-n", "6", "-q", expect=0)
    check(f"ids: {' '.join(map(str, gen))}" in out, f"generate: {out!r}, want {gen}")
    # --packed FILE: the first run packs and writes the weights it packed; later runs map them (no
    # reorder) and give the same ids; a damaged packed weight is packed again and the file rewritten;
    # a file that is not a packed-weights file is an error and stays as it was.
    side = os.path.join(tmp, "m.packed.mpk")
    gen_args = ("generate", model, "--prompt-ids", ",".join(map(str, ids)), "-n", "6")
    _, out, err = run(*gen_args, "--packed", side, expect=0)
    check(f"ids: {' '.join(map(str, gen))}" in out and "wrote " + side in err and os.path.exists(side),
          f"generate --packed (new): {out!r} {err!r}")
    doc = inspect_json(side)
    check(doc["tensors"] and all(t["dtype"] == "u8" and t["name"].count(".") == 4 for t in doc["tensors"])
          and any(m["key"] == "mpk.packed.onednn" for m in doc["metadata"]), f"packed file: {doc['tensors'][:1]}")
    _, out, err = run(*gen_args, "--packed", side, expect=0)
    check(f"ids: {' '.join(map(str, gen))}" in out and "used from " + side in err and "weights packed from --packed" in err
          and "wrote" not in err, f"generate --packed (reused): {out!r} {err!r}")
    t0 = doc["tensors"][0]
    with open(side, "r+b") as f:
        f.seek(t0["offset"] + t0["bytes"] // 2)
        b = f.read(1)
        f.seek(t0["offset"] + t0["bytes"] // 2)
        f.write(bytes([b[0] ^ 0x40]))
    _, out, err = run(*gen_args, "--packed", side, expect=0)
    check(f"ids: {' '.join(map(str, gen))}" in out and "wrote " + side in err, f"generate --packed (damaged): {out!r} {err!r}")
    run("verify", side, expect=0)  # rewritten whole (every checksum)
    ip2 = os.path.join(tmp, "ids2.npy")
    np.save(ip2, ids)
    code, _, err = run("run", model, "--input", ip2, "--packed", model, "-q")
    check(code != 0 and "not a packed-weights file" in err and "not overwritten" in err, f"--packed MODEL: {code} {err!r}")
    run("verify", model, expect=0)
    # A model of a newer format major (refused by the open with MPK_ERR_UNSUPPORTED_VERSION, the code
    # a stale packed file also gets): not overwritten either.
    future = os.path.join(tmp, "future.mpk")
    data = bytearray(open(model, "rb").read())
    data[8:10] = (2).to_bytes(2, "little")
    open(future, "wb").write(data)
    code, _, err = run("run", model, "--input", ip2, "--packed", future, "-q")
    check(code != 0 and "not overwritten" in err and open(future, "rb").read() == bytes(data), f"--packed FUTURE: {code} {err!r}")
    # A cache that cannot be written warns; the run succeeds.
    code, _, err = run("run", model, "--input", ip2, "--packed", os.path.join(tmp, "no", "dir", "p.mpk"))
    check(code == 0 and "warning: --packed" in err, f"--packed unwritable: {code} {err!r}")
    _, out, err = run("run", model, "--input", ip2, "--packed", os.path.join(tmp, "run.packed.mpk"))
    check("wrote " in err and os.path.exists(os.path.join(tmp, "run.packed.mpk")), f"run --packed: {err!r}")
    _, out, _ = run("generate", model, "--prompt", "".join(chars[i] for i in ids), "-n", "6", "-q", expect=0)
    text = "".join(chars[i] for i in list(ids) + gen)
    check(out.splitlines()[0] == text, f"generate --prompt: {out!r}, want {text!r}")
    _, out, _ = run("generate", model, "--prompt-ids", "1,2", "-n", "4", "--temperature", "0.8", "--seed", "3", "-q",
                    expect=0)
    _, out2, _ = run("generate", model, "--prompt-ids", "1,2", "-n", "4", "--temperature", "0.8", "--seed", "3", "-q",
                     expect=0)
    check(out == out2, "sampling with one seed is not reproducible")
    code, _, e = run("generate", model, "--prompt", "xyz", "-n", "2")
    check(code != 0 and "starts no token" in e, f"unknown characters: {code} {e!r}")
    code, _, e = run("generate", model, "-n", "2")
    check(code == 2, f"no prompt: {code} {e!r}")
    bad = os.path.join(tmp, "bad.json")
    json.dump({"n_layer": 3, "n_head": H, "n_embd": C}, open(bad, "w"))
    o = os.path.join(tmp, "o.mpk")
    code, _, e = run("convert", st, o, "--arch", "gpt2", "--config", bad)
    check(code != 0 and "'h.2.ln_1.weight'" in e and not os.path.exists(o), f"bad config: {code} {e!r}")
    check(not [f for f in os.listdir(tmp) if ".tmp-" in f], f"temporary files left: {os.listdir(tmp)}")


FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "runtime")


def _softmax_loss(logits, targets):
    z = logits.astype(np.float64)
    z = z - z.max(-1, keepdims=True)
    return float((np.log(np.exp(z).sum(-1)) - z[np.arange(len(targets)), targets]).mean())


def case_reference(tmp):
    """The reference models trained by PyTorch (tests/fixtures/make_runtime_fixtures.py): mpk run gives
    PyTorch's logits (f32: within 1e-4 of the largest logit), and each stored dtype stays within its
    stated bound; prints accuracy and held-out loss per dtype."""
    ref = json.load(open(os.path.join(FIXTURES, "reference.json")))
    report = []
    # The digits MLP.
    mlp = os.path.join(tmp, "mlp.mpk")
    run("convert", os.path.join(FIXTURES, "mlp.safetensors"), mlp, "--arch", "mlp", "--no-fsync", expect=0)
    x, y = os.path.join(FIXTURES, "mlp_x.npy"), np.load(os.path.join(FIXTURES, "mlp_y.npy"))
    want = np.load(os.path.join(FIXTURES, "mlp_logits.npy"))
    # bound: max |ours - torch| / max |torch|; accuracy change bound in points
    bounds = {"f32": (1e-4, 0.0), "fp16": (2e-3, 0.6), "bf16": (2e-2, 1.2), "int8": (2e-2, 1.2)}
    for dt, (lb, ab) in bounds.items():
        path = mlp if dt == "f32" else os.path.join(tmp, f"mlp.{dt}.mpk")
        if dt != "f32":
            run("quantize", mlp, path, "--to", dt, "-q", "--no-fsync", expect=0)
        out = os.path.join(tmp, "y.npy")
        run("run", path, "--input", x, "-o", out, "-q", "--no-fsync", expect=0)
        got = np.load(out)
        err = float(np.abs(got - want).max() / np.abs(want).max())
        acc = float((got.argmax(1) == y).mean())
        report.append(f"mlp {dt}: logits max err {err:.2e} of max |logit|, accuracy {100 * acc:.2f}% "
                      f"(PyTorch f32 {100 * ref['mlp']['test_accuracy']:.2f}%)")
        check(err <= lb, f"mlp {dt}: logits differ from PyTorch by {err:.3g} (bound {lb})")
        check(abs(acc - ref["mlp"]["test_accuracy"]) * 100 <= ab + 1e-9,
              f"mlp {dt}: accuracy {acc} vs PyTorch {ref['mlp']['test_accuracy']} (bound {ab} points)")
    # The character-level GPT-2.
    g = os.path.join(tmp, "gpt2.mpk")
    run("convert", os.path.join(FIXTURES, "gpt2.safetensors"), g, "--arch", "gpt2", "--config",
        os.path.join(FIXTURES, "gpt2_config.json"), "--no-fsync", expect=0)
    want = np.load(os.path.join(FIXTURES, "gpt2_logits.npy"))
    windows = np.load(os.path.join(FIXTURES, "gpt2_eval.npy"))
    T = windows.shape[1] - 1
    lbounds = {"f32": (1e-4, 1e-4), "fp16": (2e-3, 0.005), "bf16": (2e-2, 0.02), "int8": (6e-2, 0.02)}
    for dt, (lb, rel_loss) in lbounds.items():
        path = g if dt == "f32" else os.path.join(tmp, f"gpt2.{dt}.mpk")
        if dt != "f32":  # the embeddings stay f32 (the default); every matrix of the blocks is quantized
            run("quantize", g, path, "--to", dt, "-q", "--no-fsync", expect=0)
        out, ip = os.path.join(tmp, "y.npy"), os.path.join(tmp, "ids.npy")
        run("run", path, "--input", os.path.join(FIXTURES, "gpt2_ids.npy"), "-o", out, "-q", "--no-fsync", expect=0)
        err = float(np.abs(np.load(out) - want).max() / np.abs(want).max())
        losses = []
        for w in windows[:8]:
            np.save(ip, w[:T])
            run("run", path, "--input", ip, "-o", out, "-q", "--no-fsync", expect=0)
            losses.append(_softmax_loss(np.load(out), w[1:]))
        loss = float(np.mean(losses))
        if dt == "f32":
            f32_loss = loss
        report.append(f"gpt2 {dt}: logits max err {err:.2e} of max |logit|, held-out loss {loss:.4f} "
                      f"({100 * (loss / f32_loss - 1):+.2f}% vs f32; 8 windows of {T})")
        check(err <= lb, f"gpt2 {dt}: logits differ from PyTorch by {err:.3g} (bound {lb})")
        check(abs(loss / f32_loss - 1) <= rel_loss, f"gpt2 {dt}: held-out loss {loss} vs f32 {f32_loss}")
    print("\n".join("     " + r for r in report))


def case_quantize(tmp):
    """mpk quantize: int8 per channel / per group and fp16 / bf16, checked against numpy; the report
    printed and stored; defaults skip 1-D tensors and embeddings; bad options and NaN input write
    nothing."""
    d = os.path.join(tmp, "in")
    rng = np.random.default_rng(5)
    arrays = {
        "fc1.weight": (rng.standard_normal((40, 70)) * 0.05).astype(np.float32),
        "fc1.bias": (rng.standard_normal(40) * 0.05).astype(np.float32),
        "tok.embed": (rng.standard_normal((30, 8))).astype(np.float32),
        "ids": np.arange(9, dtype=np.int32),
    }
    write_tree(d, arrays)
    model = os.path.join(tmp, "m.mpk")
    run("pack", d, "-o", model, "--no-fsync", expect=0)
    w = arrays["fc1.weight"]
    for target in ("int8", "int8-g32", "int8-g64", "int8-g128", "fp16", "bf16"):
        q = os.path.join(tmp, f"{target}.mpk")
        _, out, err = run("quantize", model, q, "--to", target, "--no-fsync", expect=0)
        check("fc1.weight" in out and "snr dB" in out and "quantized 1 tensor(s)" in out and err == "",
              f"quantize {target}: {out!r} {err!r}")
        run("verify", q, expect=0)
        j = inspect_json(q)
        t = {x["name"]: x for x in j["tensors"]}
        check(t["fc1.bias"]["dtype"] == "f32" and t["tok.embed"]["dtype"] == "f32", f"{target}: defaults")
        npy = os.path.join(tmp, "w.npy")
        run("extract", q, "fc1.weight", "-o", npy, *(("--bf16-as-u16",) if target == "bf16" else ()), expect=0)
        got = np.load(npy)
        if target.startswith("int8"):
            check(j["features"]["incompatible"] & 16, f"{target}: feature bit 4")
            g = 70 if target == "int8" else int(target[6:])
            qr = t["fc1.weight"]["quant"]
            check(qr["scheme"] == ("int8-channel" if g == 70 else "int8-group") and qr["scale"] == "fc1.weight.scale",
                  f"{target}: record {qr}")
            run("extract", q, "fc1.weight.scale", "-o", npy, expect=0)
            scales = np.load(npy).reshape(40, -1)
            # numpy's reference: per row (or group) amax / 127, q = round half even, clamp.
            ref_q = np.empty_like(w, dtype=np.int8)
            for r in range(40):
                for k in range(0, 70, g):
                    x = w[r, k:k + g]
                    s = np.float32(np.abs(x).max()) / np.float32(127)
                    check(scales[r, k // g] == s, f"{target}: scale [{r},{k // g}] {scales[r, k // g]} != {s}")
                    ref_q[r, k:k + g] = np.clip(np.rint(x / s), -127, 127)
            check(got.dtype == np.int8 and np.array_equal(got, ref_q), f"{target}: q differs from numpy")
        else:
            ref = w.astype(np.float16) if target == "fp16" else None
            if ref is not None:
                check(np.array_equal(got.view(np.uint16), ref.view(np.uint16)), "fp16 differs from numpy")
            else:
                u = w.view(np.uint32).astype(np.uint64)
                bf = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
                check(np.array_equal(got.view(np.uint16), bf), "bf16 differs from round-to-nearest-even")
        check(j["metadata"] and any(m["key"] == "quantize.snr_db" for m in j["metadata"]), f"{target}: report metadata")
    # --include / --exclude / --embeddings / -q
    q = os.path.join(tmp, "sel.mpk")
    _, out, _ = run("quantize", model, q, "--to", "bf16", "--include", "bias|embed", "-q", "--no-fsync", expect=0)
    check("quantized 2 tensor(s)" in out and "snr dB" not in out, f"--include -q: {out!r}")
    _, out, _ = run("quantize", model, q, "--to", "int8", "--embeddings", "--exclude", "fc1", "--no-fsync", expect=0)
    check("tok.embed" in out and "quantized 1 tensor(s)" in out, f"--embeddings --exclude: {out!r}")
    for bad in (("--to", "int4"), ("--to", "int8", "--include", "("), ("--to", "int8", "--threads", "-1"), ()):
        x = os.path.join(tmp, "x.mpk")
        code, _, e = run("quantize", model, x, *bad)
        check(code == 2 and not os.path.exists(x), f"quantize {bad}: {code} {e!r}")
    arrays["fc1.weight"][3, 5] = np.nan
    d2 = os.path.join(tmp, "nan")
    write_tree(d2, arrays)
    nan = os.path.join(tmp, "nan.mpk")
    run("pack", d2, "-o", nan, "--no-fsync", expect=0)
    x = os.path.join(tmp, "x.mpk")
    code, _, e = run("quantize", nan, x, "--to", "int8")
    check(code == 1 and "MPK_ERR_BAD_VALUE" in e and "fc1.weight" in e and "(3, 5)" in e and not os.path.exists(x),
          f"NaN input: {code} {e!r}")


CASES = {name[5:]: fn for name, fn in globals().items() if name.startswith("case_")}


def main():
    global MPK
    if len(sys.argv) != 3 or (sys.argv[2] not in CASES and sys.argv[2] != "all"):
        print(f"usage: {sys.argv[0]} MPK_BINARY {{{'|'.join(CASES)}|all}}", file=sys.stderr)
        return 2
    MPK = os.path.abspath(sys.argv[1])
    names = list(CASES) if sys.argv[2] == "all" else [sys.argv[2]]
    failed = 0
    for name in names:
        tmp = tempfile.mkdtemp(prefix=f"mpk_cli_{name}_")
        try:
            CASES[name](tmp)
            print(f"ok   {name}")
        except AssertionError as e:
            failed += 1
            print(f"FAIL {name}: {e}")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Crash safety (issue 8): kill `mpk pack` (the Writer), `mpk convert`, `mpk compress` and `mpk patch`
(one patch and a chain of two) with SIGKILL at random points, and check after every kill that the
target path holds either the complete old file or the complete new one, never a part; that the temporary
files a killed run leaves are removed by the next run of the same target; and that after a last run to
completion nothing but the target is left.

Usage: test_crash.py MPK_BINARY [TRIALS_PER_TOOL]   (default 100; prints one line per tool)
"""
import ctypes
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np

MPK = None


def run(*args):
    p = subprocess.run([MPK, *map(str, args)], capture_output=True, text=True, timeout=600)
    if p.returncode != 0:
        raise AssertionError(f"mpk {' '.join(map(str, args))}: exit {p.returncode}\n{p.stderr}")


_xxh = None


def digest(path):
    """XXH3-64 of a file's bytes (None when it does not exist)."""
    global _xxh
    if _xxh is None:
        _xxh = ctypes.CDLL("libxxhash.so.0").XXH3_64bits
        _xxh.restype = ctypes.c_uint64
        _xxh.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
    try:
        data = open(path, "rb").read()
    except FileNotFoundError:
        return None
    return _xxh(data, len(data))


def temps_of(target):
    """The temporary files of `target` in its directory (FORMAT-independent: the writer's naming,
    lib/io/file.cpp: ".<name>.tmp-<pid>-<tag>", a chain's intermediates with one more dot)."""
    d, name = os.path.split(target)
    return sorted(f for f in os.listdir(d) if f.lstrip(".").startswith(name + ".tmp-"))


def write_tree(d, arrays):
    os.makedirs(d, exist_ok=True)
    for name, a in arrays.items():
        np.save(os.path.join(d, name + ".npy"), a)


def make_inputs(tmp):
    """Models of ~48 MiB (several tensors, so a kill can land between and inside tensors)."""
    rng = np.random.default_rng(11)
    v1 = {f"layer{i}.weight": (rng.standard_normal((1024, 1536)) * 0.02).astype(np.float32) for i in range(8)}
    v1["bias"] = (rng.standard_normal(1536) * 0.01).astype(np.float32)
    v2 = {k: v + (rng.standard_normal(v.shape) * 1e-4).astype(np.float32) for k, v in v1.items()}
    v3 = dict(v2, **{"layer0.weight": v2["layer0.weight"] + np.float32(1e-3)})
    paths = {}
    for name, arrays in (("v1", v1), ("v2", v2), ("v3", v3)):
        write_tree(os.path.join(tmp, name), arrays)
        paths[name] = os.path.join(tmp, name + ".mpk")
        run("pack", os.path.join(tmp, name), "-o", paths[name], "--no-fsync")
    write_tree(os.path.join(tmp, "small"), {"x": np.arange(10, dtype=np.int32)})
    paths["old"] = os.path.join(tmp, "old.mpk")  # what every target holds before a trial
    run("pack", os.path.join(tmp, "small"), "-o", paths["old"], "--no-fsync")
    paths["st"] = os.path.join(tmp, "v1.safetensors")
    run("convert", paths["v1"], paths["st"], "--no-fsync")
    paths["p12"], paths["p23"] = os.path.join(tmp, "p12.mpkd"), os.path.join(tmp, "p23.mpkd")
    run("diff", paths["v1"], paths["v2"], "-o", paths["p12"], "--no-fsync")
    run("diff", paths["v2"], paths["v3"], "-o", paths["p23"], "--no-fsync")
    return paths


def trials(name, argv, target, old, trials_n, rng):
    """Runs argv (which writes `target`) to completion once for the new file's digest and duration,
    then trials_n times: target := old, start, SIGKILL after a random delay, check."""
    shutil.copyfile(old, target)
    t0 = time.monotonic()
    subprocess.run([MPK, *argv], check=True, capture_output=True)
    full = time.monotonic() - t0
    new_digest, old_digest = digest(target), digest(old)
    assert new_digest not in (None, old_digest), f"{name}: the run did not write a new file"
    outcomes = {"old": 0, "new": 0}
    killed_mid_write = 0
    max_left = 0
    for k in range(trials_n):
        shutil.copyfile(old, target)
        before = temps_of(target)  # left by the previous trial's kill: the next run removes them
        p = subprocess.Popen([MPK, *argv], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0, full * 1.1))
        p.send_signal(signal.SIGKILL)
        p.wait()
        got = digest(target)
        if got == old_digest:
            outcomes["old"] += 1
        elif got == new_digest:
            outcomes["new"] += 1
        else:
            raise AssertionError(f"{name}, trial {k}: the target holds neither the old nor the new file "
                                 f"({'missing' if got is None else 'other bytes'})")
        left = temps_of(target)
        max_left = max(max_left, len(left))
        if left:
            killed_mid_write += 1
        # What a killed run left is removed by the next run before it writes anything of its own:
        # once this run has a temporary file, none of an earlier run's may be left.
        own = [f for f in left if f".tmp-{p.pid}-" in f]
        stale = [f for f in left if f not in own]
        if stale and (own or got == new_digest):
            raise AssertionError(f"{name}, trial {k}: the run (pid {p.pid}) left earlier runs' {stale} in place "
                                 f"(before it: {before})")
    # The last run completes: everything the killed runs left is removed, only the target remains.
    subprocess.run([MPK, *argv], check=True, capture_output=True)
    assert digest(target) == new_digest, f"{name}: the final run did not write the new file"
    left = temps_of(target)
    assert not left, f"{name}: temporary files left after a complete run: {left}"
    assert killed_mid_write > 0, f"{name}: no kill landed while the target was being written ({full:.3f} s runs)"
    print(f"ok   {name}: {trials_n} kills, target old {outcomes['old']} / new {outcomes['new']} / "
          f"partial 0; {killed_mid_write} kills left temporary files (at most {max_left} at once), all "
          f"removed by the next run; a full run takes {full * 1000:.0f} ms")
    return outcomes


def main():
    global MPK
    if len(sys.argv) not in (2, 3):
        print(__doc__, file=sys.stderr)
        return 2
    MPK = os.path.abspath(sys.argv[1])
    n = int(sys.argv[2]) if len(sys.argv) == 3 else 100
    rng = random.Random(int(os.environ.get("MPK_CRASH_SEED", "8")))
    with tempfile.TemporaryDirectory(prefix="mpk-crash-") as tmp:
        p = make_inputs(tmp)
        out = os.path.join(tmp, "out")
        os.makedirs(out)
        t = lambda name: os.path.join(out, name)  # noqa: E731
        cases = [
            ("writer (mpk pack)", ["pack", os.path.join(tmp, "v1"), "-o", t("pack.mpk"), "--no-fsync"], t("pack.mpk")),
            ("mpk convert", ["convert", p["st"], t("conv.mpk"), "--no-fsync"], t("conv.mpk")),
            ("mpk compress", ["compress", p["v1"], t("comp.mpk"), "--no-fsync"], t("comp.mpk")),
            ("mpk patch", ["patch", p["v1"], p["p12"], "-o", t("patched.mpk"), "--no-fsync"], t("patched.mpk")),
            ("mpk patch (chain of 2)", ["patch", p["v1"], p["p12"], p["p23"], "-o", t("chain.mpk"), "--no-fsync"],
             t("chain.mpk")),
        ]
        total = 0
        for name, argv, target in cases:
            trials(name, argv, target, p["old"], n, rng)
            total += n
        print(f"{total} passed, 0 failed")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Fuzz the cloud service from the outside: malformed, hostile and valid requests mixed,
and no answer may be a 5xx (the hardening issues' check, re-runnable).

    python benchmarks/fuzz_server.py EXPORT_DIR [--requests 5000] [--seed 0]

Starts `deepobfuscator serve` as the load test does (loopback, a token), then sends
--requests requests drawn from: valid int8 / float32 bodies (gzip or not), truncated and
padded bodies, random bytes, header fields flipped (magic, version, dtype, quantisation,
ndim), huge and zero dimensions, NaN / infinity in float32 features, gzip bombs and bad
gzip, wrong or missing tokens and content types, unknown paths and methods. Prints the
status counts per kind and the server's peak memory; exits 1 on any 5xx or a dead server.
"""

from __future__ import annotations

import argparse
import gzip
import os
import struct
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from load_test import TOKEN, free_port, make_bodies, start_server  # noqa: E402

from deepobfuscator import wire  # noqa: E402


def _mutations(valid: bytes, rng: np.random.Generator, shape: tuple[int, ...]) -> dict:
    """Kind -> a function of nothing giving (method, path, headers, body)."""
    auth = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/octet-stream"}
    head = 8 + 4 * 4  # magic + 4 bytes + 4 dims

    def flip(offset: int) -> bytes:
        b = bytearray(valid)
        b[offset] = int(rng.integers(0, 256))
        return bytes(b)

    def dims(values: tuple[int, ...]) -> bytes:
        return valid[:8] + struct.pack("<4I", *values) + valid[head:]

    def float_body(bad: float) -> bytes:
        z = rng.standard_normal((1, *shape)).astype(np.float32)
        body = bytearray(wire.encode(z, "float32"))
        struct.pack_into("<f", body, len(body) - 4, bad)
        return bytes(body)

    bomb = gzip.compress(valid[:head] + bytes(16 << 20), compresslevel=9)
    return {
        "valid": lambda: ("POST", "/v1/classify", auth, valid),
        "valid gzip": lambda: ("POST", "/v1/classify", {**auth, "Content-Encoding": "gzip"},
                               gzip.compress(valid)),
        "truncated": lambda: ("POST", "/v1/classify", auth,
                              valid[:int(rng.integers(0, len(valid)))]),
        "padded": lambda: ("POST", "/v1/classify", auth,
                           valid + bytes(int(rng.integers(1, 64)))),
        "random bytes": lambda: ("POST", "/v1/classify", auth,
                                 rng.bytes(int(rng.integers(0, 4096)))),
        "header byte flipped": lambda: ("POST", "/v1/classify", auth,
                                        flip(int(rng.integers(0, head)))),
        "huge dims": lambda: ("POST", "/v1/classify", auth,
                              dims((2**31, *shape))),
        "zero dims": lambda: ("POST", "/v1/classify", auth, dims((0, *shape))),
        "NaN / inf": lambda: ("POST", "/v1/classify", auth,
                              float_body(float(rng.choice([np.nan, np.inf, -np.inf])))),
        "gzip bomb": lambda: ("POST", "/v1/classify", {**auth, "Content-Encoding": "gzip"},
                              bomb),
        "bad gzip": lambda: ("POST", "/v1/classify", {**auth, "Content-Encoding": "gzip"},
                             b"\x1f\x8b" + rng.bytes(200)),
        "wrong token": lambda: ("POST", "/v1/classify",
                                {**auth, "Authorization": "Bearer nope"}, valid),
        "no token": lambda: ("POST", "/v1/classify",
                             {"Content-Type": "application/octet-stream"}, valid),
        "odd content type": lambda: ("POST", "/v1/classify",
                                     {**auth, "Content-Type": b"text/plain; charset=\xff"},
                                     valid),
        "unknown path": lambda: ("GET", "/v1/" + rng.bytes(6).hex(), auth, b""),
        "wrong method": lambda: ("PUT", "/v1/classify", auth, valid),
    }


def _peak_rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return -1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("export", type=Path)
    ap.add_argument("--requests", type=int, default=5000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    valid = make_bodies(args.export, 1, False)[0][0]
    from deepobfuscator.deploy.manifest import load_export

    shape = tuple(load_export(args.export).feature_shape)
    kinds = _mutations(valid, rng, shape)
    names = list(kinds)
    port = free_port()
    proc = start_server(args.export, port, 1)
    url = f"http://127.0.0.1:{port}"
    counts: dict[str, Counter] = defaultdict(Counter)
    five = 0
    t0 = time.perf_counter()
    try:
        with httpx.Client(base_url=url, timeout=30) as http:
            for _ in range(args.requests):
                kind = names[int(rng.integers(0, len(names)))]
                method, path, headers, body = kinds[kind]()
                try:
                    r = http.request(method, path, headers=headers, content=body)
                    status = str(r.status_code)
                except httpx.HTTPError as exc:
                    status = exc.__class__.__name__
                counts[kind][status] += 1
                five += status.startswith("5")
                if proc.poll() is not None:
                    print(f"the server died (exit {proc.returncode})", file=sys.stderr)
                    return 1
        peak = _peak_rss_kb(proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    seconds = time.perf_counter() - t0
    for kind in names:
        print(f"{kind:>20}: " + ", ".join(f"{s} x{n}" for s, n in sorted(counts[kind].items())))
    print(f"{args.requests} requests in {seconds:.1f} s; 5xx answers: {five}; server peak "
          f"memory {peak / 1024:.0f} MiB (pid {proc.pid}, {os.cpu_count()} cores)")
    return 1 if five else 0


if __name__ == "__main__":
    sys.exit(main())

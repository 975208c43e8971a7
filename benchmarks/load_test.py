"""Bounded load test of the cloud service on loopback.

    python benchmarks/load_test.py EXPORT_DIR [--clients 8] [--duration 10] [--batch 1]
                                              [--no-compress] [--server-threads 1]
                                              [--batch-wait-ms 2]   (-1: no batching)
                                              [--server-workers 1]
    python benchmarks/load_test.py EXPORT_DIR --generator wrk [--clients 32] ...
    python benchmarks/load_test.py EXPORT_DIR --bombs 64 [--duration 10]

Starts `deepobfuscator serve` in a subprocess on a free loopback port (with a token,
access log off), then runs --clients concurrent clients (asyncio + httpx, one
keep-alive connection each) that POST feature batches in the export's wire dtype,
gzip-compressed where that helps, as `deepobfuscator classify` sends them, for
--duration seconds. Prints requests/s, images/s, p50/p99 latency and the error count;
exits 1 if any request failed. The features are the obfuscator's real output on
rendered faces, so the payload size is the real one. Clients and server share this
machine's cores: on a 2-core machine the figures are a floor, not a server capacity.

--generator wrk: the load comes from wrk (a C load generator, `apt install wrk`) instead:
--clients connections on one wrk thread, the same bodies (one of them, from a file), so
the generator takes a small share of the cores the server runs on. Its latency
percentiles are wrk's (a request's whole time on the client's side); it reads no
Server-Timing.

--bombs N: N clients instead send, as fast as they can, the hardening issue's body: about
16 KB of gzip that inflates into a valid 16 MiB int8 batch of 1,398,099 images (a
per-tensor (1, 2, 2) header, zeros behind it). Meanwhile a probe GETs /healthz every 50
ms. Prints the bomb answers (all should be 413), /healthz p50/p99/max latency and the
server's peak memory (VmHWM); exits 1 if /healthz p99 >= 50 ms or a bomb got a 200.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np

from deepobfuscator.data.synthfaces import generate_synthfaces
from deepobfuscator.deploy.client import DeviceObfuscator, gzip_body
from deepobfuscator.deploy.preprocess_np import to_input

TOKEN = "load-test-token"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(export: Path, port: int, threads: int,
                 batch_wait_ms: float | None = None, workers: int = 1) -> subprocess.Popen:
    src = Path(__file__).resolve().parents[1] / "src"
    env = {**os.environ, "PYTHONPATH": f"{src}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    env["DEEPOBFUSCATOR_TOKEN"] = TOKEN  # not on the command line, where `ps` shows it
    cmd = [sys.executable, "-m", "deepobfuscator.deploy.cli_commands", "serve", str(export),
           "--port", str(port), "--log-level", "warning",
           "--threads", str(threads)]
    if batch_wait_ms is not None:
        cmd += ["--batch-wait-ms", str(batch_wait_ms)]
    if workers > 1:
        cmd += ["--workers", str(workers)]
    proc = subprocess.Popen(cmd, env=env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with code {proc.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.terminate()
    raise SystemExit("server did not become healthy within 60 s")


def make_bodies(export: Path, batch: int, compress: bool,
                n: int = 16) -> tuple[list[bytes], bool]:
    """The request bodies, and whether they are gzipped: like the client, only where gzip
    makes them smaller (a few-number upload grows under its framing)."""
    # a throwaway secret: the load test is not a device and leaves this machine's alone
    device = DeviceObfuscator(export, threads=1, device_secret=os.urandom(32))
    size = tuple(device.bundle.preprocessing["size"])
    faces = to_input(generate_synthfaces(n, batch, size, seed=11).images)
    bodies = [device.encode(device.features(faces[i * batch:(i + 1) * batch]))
              for i in range(n)]
    packed = [gzip_body(b) for b in bodies]
    if compress and sum(map(len, packed)) < sum(map(len, bodies)):
        return packed, True
    return bodies, False


def server_timing(header: str) -> dict[str, float]:
    """`read;dur=0.12, decode;dur=0.30, ...` -> {"read": 0.12, ...} (ms)."""
    out = {}
    for part in header.split(","):
        name, _, dur = part.strip().partition(";dur=")
        if dur:
            out[name] = float(dur)
    return out


async def client(url: str, bodies: list[bytes], stop: float, lat: list, errors: list,
                 compress: bool, timings: list) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/octet-stream"}
    if compress:
        headers["Content-Encoding"] = "gzip"
    async with httpx.AsyncClient(timeout=30) as http:
        i = 0
        while time.perf_counter() < stop:
            t0 = time.perf_counter()
            try:
                r = await http.post(url, content=bodies[i % len(bodies)], headers=headers)
                ok = r.status_code == 200
                if ok:
                    timings.append(server_timing(r.headers.get("server-timing", "")))
                else:
                    errors.append(f"{r.status_code}: {r.text[:100]}")
            except httpx.HTTPError as exc:
                ok = False
                errors.append(f"{exc.__class__.__name__}: {exc}")
            if ok:
                lat.append((time.perf_counter() - t0) * 1e3)
            i += 1


async def run_load(url: str, bodies: list[bytes], clients: int, duration: float,
                   compress: bool) -> dict:
    lat: list[float] = []
    errors: list[str] = []
    timings: list[dict[str, float]] = []
    t0 = time.perf_counter()
    await asyncio.gather(*(client(url, bodies, t0 + duration, lat, errors, compress, timings)
                           for _ in range(clients)))
    wall = time.perf_counter() - t0
    # where a request's time goes: the server's own parts (Server-Timing), the rest is
    # HTTP, authentication, the event loop and the client
    parts = {k: round(float(np.mean([t.get(k, 0.0) for t in timings])), 3)
             for k in ("read", "decode", "queue", "model")} if timings else {}
    if parts and lat:
        parts["http_and_rest"] = round(float(np.mean(lat)) - sum(parts.values()), 3)
    return {"requests": len(lat) + len(errors), "ok": len(lat), "errors": len(errors),
            "error_samples": errors[:5], "seconds": round(wall, 2),
            "requests_per_s": round(len(lat) / wall, 1),
            "p50_ms": round(float(np.percentile(lat, 50)), 2) if lat else None,
            "p99_ms": round(float(np.percentile(lat, 99)), 2) if lat else None,
            "mean_ms": round(float(np.mean(lat)), 3) if lat else None, "time_ms": parts}


WRK_SCRIPT = """
local f = io.open(os.getenv("LOAD_BODY"), "rb")
wrk.method = "POST"
wrk.body = f:read("*all")
f:close()
wrk.headers["Authorization"] = "Bearer " .. os.getenv("LOAD_TOKEN")
wrk.headers["Content-Type"] = "application/octet-stream"
if os.getenv("LOAD_GZIP") == "1" then wrk.headers["Content-Encoding"] = "gzip" end
"""


def _wrk_ms(text: str) -> float:
    """wrk's '812.00us' / '1.23ms' / '2.01s' -> milliseconds."""
    for unit, scale in (("us", 1e-3), ("ms", 1.0), ("s", 1e3)):
        if text.endswith(unit):
            return float(text[:-len(unit)]) * scale
    raise ValueError(f"wrk latency {text!r}")


def run_wrk(url: str, body: bytes, clients: int, duration: float, compress: bool) -> dict:
    """The load from wrk (one thread, `clients` connections): requests/s, p50/p99, errors."""
    import re
    import shutil
    import tempfile

    if shutil.which("wrk") is None:
        raise SystemExit("--generator wrk needs wrk on PATH: apt install wrk")
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "body.bin").write_bytes(body)
        (Path(tmp) / "post.lua").write_text(WRK_SCRIPT)
        env = {**os.environ, "LOAD_BODY": str(Path(tmp) / "body.bin"), "LOAD_TOKEN": TOKEN,
               "LOAD_GZIP": "1" if compress else "0"}
        out = subprocess.run(["wrk", "-t1", f"-c{clients}", f"-d{max(1, round(duration))}s",
                              "--latency", "-s", str(Path(tmp) / "post.lua"), url],
                             capture_output=True, text=True, env=env, check=True).stdout
    pct = {m[1]: _wrk_ms(m[2]) for m in re.finditer(r"^\s+(50|99)%\s+(\S+)$", out, re.M)}
    total = int(re.search(r"(\d+) requests in", out)[1])  # type: ignore[index]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                     out)
    errors = (int(bad[1]) if bad else 0) + (sum(map(int, sock.groups())) if sock else 0)
    return {"requests": total, "ok": total - errors, "errors": errors, "error_samples": [],
            "seconds": duration,
            "requests_per_s": float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1]),  # type: ignore[index]
            "p50_ms": pct.get("50"), "p99_ms": pct.get("99"), "mean_ms": None, "time_ms": {},
            "generator": "wrk"}


def bomb_body(shape: tuple[int, int, int]) -> bytes:
    """A gzip body that inflates into a valid 16 MiB per-tensor int8 batch of `shape`."""
    import gzip
    import struct

    from deepobfuscator import wire

    per = 8 + int(np.prod(shape))  # scale + zero point, then the payload, per image
    n = (16 * 1024 * 1024 - wire.HEADER_BYTES) // per
    head = struct.pack("<4sBBBB4I", wire.MAGIC, wire.VERSION, wire.DTYPES["int8"],
                       wire.QUANT_TENSOR, 4, n, *shape)
    return gzip.compress(head + bytes(per * n), 9)


async def run_bombs(base: str, clients: int, duration: float,
                    shape: tuple[int, int, int]) -> dict:
    import threading

    body = bomb_body(shape)
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Encoding": "gzip"}
    codes: dict[int, int] = {}
    health: list[float] = []
    stop = time.perf_counter() + duration

    async def bomber() -> None:
        async with httpx.AsyncClient(timeout=30) as http:
            while time.perf_counter() < stop:
                r = await http.post(f"{base}/v1/classify", content=body, headers=headers)
                codes[r.status_code] = codes.get(r.status_code, 0) + 1

    def probe() -> None:  # its own thread and connection: not queued behind the bombers
        with httpx.Client(timeout=30) as http:
            while time.perf_counter() < stop:
                t0 = time.perf_counter()
                http.get(f"{base}/healthz")
                health.append((time.perf_counter() - t0) * 1e3)
                time.sleep(0.05)

    prober = threading.Thread(target=probe)
    prober.start()
    await asyncio.gather(*(bomber() for _ in range(clients)))
    prober.join()
    return {"bomb_bytes": len(body), "answers": codes, "healthz_probes": len(health),
            "healthz_p50_ms": round(float(np.percentile(health, 50)), 2),
            "healthz_p99_ms": round(float(np.percentile(health, 99)), 2),
            "healthz_max_ms": round(max(health), 2)}


def peak_rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("export", type=Path, help="export folder from `deepobfuscator export`")
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--duration", type=float, default=10.0, help="seconds of load")
    p.add_argument("--batch", type=int, default=1, help="images per request")
    p.add_argument("--server-threads", type=int, default=1, help="onnxruntime threads")
    p.add_argument("--no-compress", action="store_true", help="send bodies without gzip")
    p.add_argument("--server-workers", type=int, default=1, help="serve --workers")
    p.add_argument("--batch-wait-ms", type=float, default=None,
                   help="the server's --batch-wait-ms (-1: no batching; default: serve's)")
    p.add_argument("--generator", choices=["httpx", "wrk"], default="httpx",
                   help="the clients: asyncio + httpx in this process, or wrk (C)")
    p.add_argument("--json", type=Path, help="also write the figures here")
    p.add_argument("--bombs", type=int, default=0,
                   help="instead: this many clients sending gzip bombs, /healthz probed")
    args = p.parse_args()
    if args.bombs:
        port = free_port()
        proc = start_server(args.export, port, args.server_threads)
        try:
            idle = peak_rss_mb(proc.pid)
            from deepobfuscator.deploy.manifest import load_export

            shape = load_export(args.export).feature_shape
            res = asyncio.run(run_bombs(f"http://127.0.0.1:{port}", args.bombs, args.duration,
                                        shape))
            res.update(server_peak_mb=peak_rss_mb(proc.pid), server_start_mb=idle,
                       clients=args.bombs, seconds=args.duration)
        finally:
            proc.terminate()
            proc.wait(10)
        print(json.dumps(res, indent=1))
        if args.json:
            args.json.write_text(json.dumps(res, indent=2) + "\n")
        return 1 if res["healthz_p99_ms"] >= 50 or res["answers"].get(200) else 0
    compress = not args.no_compress
    bodies, compress = make_bodies(args.export, args.batch, compress)
    port = free_port()
    proc = start_server(args.export, port, args.server_threads, args.batch_wait_ms,
                        args.server_workers)
    url = f"http://127.0.0.1:{port}/v1/classify"
    try:
        res = (run_wrk(url, bodies[0], args.clients, args.duration, compress)
               if args.generator == "wrk" else
               asyncio.run(run_load(url, bodies, args.clients, args.duration, compress)))
    finally:
        proc.terminate()
        proc.wait(10)
    res.update(clients=args.clients, batch=args.batch, gzip=compress,
               body_bytes_mean=round(float(np.mean([len(b) for b in bodies]))),
               server_threads=args.server_threads, batch_wait_ms=args.batch_wait_ms,
               server_workers=args.server_workers,
               images_per_s=round(res["requests_per_s"] * args.batch, 1))
    print(f"{res['clients']} clients, batch {res['batch']}, {res['body_bytes_mean']} bytes per "
          f"request ({'gzip' if compress else 'no gzip'}), server threads "
          f"{args.server_threads} x {args.server_workers} workers, {res['seconds']} s: "
          f"{res['requests_per_s']} requests/s "
          f"({res['images_per_s']} images/s), p50 {res['p50_ms']} ms, p99 {res['p99_ms']} ms, "
          f"errors {res['errors']} of {res['requests']}"
          + (f"; mean {res['mean_ms']} ms = " + " + ".join(f"{k} {v}" for k, v in
                                                          res["time_ms"].items())
             if res["time_ms"] else f" ({args.generator})"))
    for e in res["error_samples"]:
        print(f"  error: {e}")
    if args.json:
        args.json.write_text(json.dumps(res, indent=2) + "\n")
    return 1 if res["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())

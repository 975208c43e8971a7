"""Subcommands export, serve, classify and bench for the `deepobfuscator` command.

`register(subparsers)` adds them to the main parser; heavy imports (torch,
onnxruntime, fastapi) happen inside each command, so `--help` stays fast and
`classify` never imports torch. Run standalone with `python -m
deepobfuscator.deploy.cli_commands ...`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..errors import UserError, run_command
from ..wire import DTYPES
from .keyed_noise import NOISE_KEYS
from .limits import (
    DEFAULT_BATCH_WAIT_MS,
    DEFAULT_BODY_TIMEOUT,
    DEFAULT_MAX_BODY,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_UPLOADS,
)


class UsageError(UserError):
    """A deploy command given options that cannot work (the message says which)."""


# User errors of the deploy commands: the CLI prints their message, no traceback.
# every error a user can fix derives from UserError (errors.py, no torch); a missing file
# named on the command line is one too



def port_number(text: str) -> int:
    """--port: a TCP port (argparse prints the message as one line, no traceback)."""
    import argparse

    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a TCP port: give 1-65535")
    return port

def cmd_export(args: argparse.Namespace) -> int:
    from .export import export_run

    out = export_run(Path(args.run), Path(args.out), wire_dtype=args.wire_dtype,
                     per_channel=not args.per_tensor, parity_images=args.parity_images,
                     mobile=not args.no_mobile, force=args.force, noise_key=args.noise_key,
                     threads=args.threads)
    from .manifest import load_export

    bundle = load_export(out, check_hashes=False)  # export_run has just checked them
    m = bundle.manifest
    p = m["parity"]
    print(f"exported {bundle.task} model to {out}: obfuscator.onnx "
          f"({m['models']['obfuscator']['bytes']} B), classifier.onnx "
          f"({m['models']['classifier']['bytes']} B); {m['mobile']}")
    print(f"parity onnxruntime vs PyTorch on {p['images']} images ({p['image_source']}): "
          f"features {p['features_max_abs_diff']:.2g}, probability "
          f"{p['probability_max_abs_diff']:.2g} (tolerance {p['features_tolerance']:.0e} / "
          f"{p['probability_tolerance']:.0e})")
    from .manifest import MANIFEST, sha256_file

    print(f"manifest sha256: {sha256_file(out / MANIFEST)} (pin it: serve and classify "
          "--manifest-sha256; an app ships it inside itself)")
    w = m["wire"]
    print(f"wire: {w['dtype']} ({w['quantization']}), {w['bytes_per_image']} bytes per image "
          f"vs {w['image_bytes_uint8']} bytes of raw uint8 input")
    if bundle.noise_std > 0:
        how = ("keyed to the photo (a repeated photo carries the same noise)"
               if bundle.noise_key == "photo" else "fresh for every upload")
        print(f"feature noise: std {bundle.noise_std} added on the device, {how}")
    return 0


def resolve_token(args: argparse.Namespace) -> str | None:
    """--token or --token-file (one of them), None for the environment's. A token on the
    command line is visible to every user of the machine (`ps`): it works, with a
    warning; a file (mode 0600) or $DEEPOBFUSCATOR_TOKEN do not show."""
    path = getattr(args, "token_file", None)
    if path is not None and args.token is not None:
        raise UsageError("give --token or --token-file, not both")
    if path is not None:
        try:
            lines = Path(path).read_text(encoding="utf-8").strip().splitlines()
            token = lines[0].strip() if lines else ""
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"--token-file {path}: cannot read it ({type(exc).__name__}); "
                             "give a readable UTF-8 file holding the token") from exc
        if not token:
            raise UsageError(f"--token-file {path} is empty: write the token into it")
        return token
    if args.token is not None:
        if not args.token.strip():
            # e.g. --token "$TOKEN" with TOKEN unset: it would look protected, accept anyone
            raise UsageError("--token is empty: pass a non-empty token, or leave --token out "
                             "(and $DEEPOBFUSCATOR_TOKEN unset) to serve without "
                             "authentication")
        print("warning: a token on the command line shows in `ps` to every user of this "
              "machine; use --token-file FILE or $DEEPOBFUSCATOR_TOKEN", file=sys.stderr)
    return args.token


def cmd_serve(args: argparse.Namespace) -> int:
    from .server import serve

    token = resolve_token(args)
    serve(Path(args.export), host=args.host, port=args.port, token=token,
          max_body_bytes=args.max_body_bytes, threads=args.threads, log_level=args.log_level,
          manifest_sha256=args.manifest_sha256, attacker_view=args.attacker_view,
          body_timeout=args.body_timeout, max_uploads=args.max_uploads,
          max_connections=args.max_connections, api_docs=args.api_docs,
          batch_wait_ms=args.batch_wait_ms, workers=args.workers)
    return 0


def cmd_classify(args: argparse.Namespace) -> int:
    from .client import classify_images

    results = classify_images(args.server, Path(args.model), args.images,
                              token=resolve_token(args),
                              batch_size=args.batch_size, compress=not args.no_compress,
                              threads=args.threads, pin=args.manifest_sha256)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        from .client import describe

        for r in results:  # one line per image, every task's answer on it
            print(describe(r))
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from .bench import bench

    res = bench(Path(args.export), threads=tuple(args.threads), runs=args.runs,
                image=args.image)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2) + "\n")
        print(f"figures written to {args.json}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add export, serve, classify and bench to the main command's subparsers."""
    e = subparsers.add_parser("export", help="export a trained run to ONNX + manifest")
    e.add_argument("run", help="run folder from `deepobfuscator train`")
    e.add_argument("--out", required=True, help="export folder to write")
    e.add_argument("--wire-dtype", choices=sorted(DTYPES), default="int8",
                   help="how features travel (default int8: 4x smaller than float32)")
    e.add_argument("--per-tensor", action="store_true",
                   help="int8 with one scale for the tensor instead of one per channel")
    e.add_argument("--parity-images", type=int, default=32)
    e.add_argument("--threads", type=int, default=0,
                   help="CPU threads (0: the cores other processes leave free)")
    e.add_argument("--no-mobile", action="store_true",
                   help="skip the ExecuTorch .pte even when executorch is installed")
    e.add_argument("--force", action="store_true",
                   help="replace an export already in --out (swapped in only once the new "
                   "one is complete and parity-checked)")
    e.add_argument("--noise-key", choices=list(NOISE_KEYS), default="photo",
                   help="how the device draws the feature noise (runs trained with "
                   "privacy.feature_noise): photo (default) keys it to the photo with a "
                   "secret kept on the device, so the same photo sent again carries the same "
                   "noise and cannot be averaged; fresh draws new noise for every upload")
    e.set_defaults(func=cmd_export)

    s = subparsers.add_parser("serve", help="serve the cloud classifier of an export (HTTP)")
    s.add_argument("export", help="export folder from `deepobfuscator export`")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=port_number, default=8000,
                   help="TCP port, 1-65535 (default 8000)")
    s.add_argument("--token", default=None,
                   help="require 'Authorization: Bearer TOKEN' (default: $DEEPOBFUSCATOR_TOKEN; "
                   "visible in `ps`: prefer --token-file)")
    s.add_argument("--token-file", default=None, metavar="FILE",
                   help="read the bearer token from FILE (its first line)")
    s.add_argument("--max-body-bytes", type=int, default=DEFAULT_MAX_BODY)
    s.add_argument("--body-timeout", type=float, default=DEFAULT_BODY_TIMEOUT, metavar="S",
                   help="answer 408 to a body that has not arrived within S seconds "
                   f"(default {DEFAULT_BODY_TIMEOUT:g}: a trickling client holds a slot no longer)")
    s.add_argument("--max-uploads", type=int, default=DEFAULT_MAX_UPLOADS, metavar="N",
                   help=f"bodies read at once; beyond, 503 at once (default {DEFAULT_MAX_UPLOADS})")
    s.add_argument("--max-connections", type=int, default=DEFAULT_MAX_CONNECTIONS, metavar="N",
                   help="connections uvicorn holds; beyond, 503 (default "
                   f"{DEFAULT_MAX_CONNECTIONS})")
    s.add_argument("--batch-wait-ms", type=float, default=DEFAULT_BATCH_WAIT_MS, metavar="MS",
                   help="concurrent requests run through the classifier as one batch; wait up "
                   "to MS for requests still arriving (a lone request never waits; -1: no "
                   f"batching; default {DEFAULT_BATCH_WAIT_MS:g})")
    s.add_argument("--workers", type=int, default=1, metavar="N",
                   help="server processes sharing the port, each with its own classifier "
                   "(default 1)")
    s.add_argument("--api-docs", action="store_true",
                   help="serve the API reference at /docs (rendered by the server; off by "
                   "default)")
    s.add_argument("--threads", type=int, default=0,
                   help="onnxruntime threads (0: the cores other processes leave free)")
    s.add_argument("--log-level", default="info",
                   choices=["critical", "error", "warning", "info", "debug"],
                   help="uvicorn log level (info logs every request)")
    s.add_argument("--manifest-sha256", default=None, metavar="HEX",
                   help="refuse to start unless manifest.json has this SHA-256 (printed by "
                   "`export`): the model hashes catch corruption, this pin catches a swap")
    s.add_argument("--attacker-view", default=None, metavar="AUDIT_DIR",
                   help="also show, on the page, what the audit's inverse networks rebuild "
                   "from the bytes a device sent and from the no-privacy baseline's features "
                   "(needs the [train] extra; off by default)")
    s.set_defaults(func=cmd_serve)

    c = subparsers.add_parser("classify", help="classify images through a running server")
    c.add_argument("images", nargs="+", metavar="IMAGE")
    c.add_argument("--server", required=True, help="e.g. http://127.0.0.1:8000")
    c.add_argument("--model", required=True, help="the export folder (runs the obfuscator here)")
    c.add_argument("--token", default=None, help="bearer token (default: $DEEPOBFUSCATOR_TOKEN; "
                   "visible in `ps`: prefer --token-file)")
    c.add_argument("--token-file", default=None, metavar="FILE",
                   help="read the bearer token from FILE (its first line)")
    c.add_argument("--batch-size", type=int, default=32)
    c.add_argument("--no-compress", action="store_true",
                   help="send the features without gzip (Content-Encoding)")
    c.add_argument("--json", action="store_true", help="print the answers as JSON")
    c.add_argument("--threads", type=int, default=0,
                   help="onnxruntime threads for the obfuscator (0: the free cores)")
    c.add_argument("--manifest-sha256", default=None, metavar="HEX",
                   help="refuse the export unless manifest.json has this SHA-256 (printed by "
                   "`export`; an app ships it inside itself)")
    c.set_defaults(func=cmd_classify)

    b = subparsers.add_parser("bench", help="on-device latency, size, FLOPs, payload bytes")
    b.add_argument("export", help="export folder from `deepobfuscator export`")
    b.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    b.add_argument("--runs", type=int, default=100)
    b.add_argument("--image", default=None, help="a photo for the payload vs JPEG sizes")
    b.add_argument("--json", default=None, metavar="PATH", help="also write the figures here")
    b.set_defaults(func=cmd_bench)


def main(argv: list[str] | None = None) -> int:
    """Standalone entry point (the same commands as `deepobfuscator`)."""
    parser = argparse.ArgumentParser(prog="python -m deepobfuscator.deploy.cli_commands")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return run_command(args)



if __name__ == "__main__":
    sys.exit(main())

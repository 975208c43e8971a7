"""The browser page's one third-party asset: onnxruntime-web (MIT), fetched from the npm
registry at set-up time (`make setup` runs this), pinned, into deploy/web/vendor/, which
`deepobfuscator serve` serves beside the page. Nothing is fetched at run time.

    python -m deepobfuscator.deploy.web_assets [--force]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ORT_WEB_VERSION = "1.23.2"
# the WebAssembly build (an ES module), its loader and its runtime (no WebGL/WebGPU)
FILES = ("ort.wasm.bundle.min.mjs", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm")
WEB = Path(__file__).resolve().parent / "web"
VENDOR = WEB / "vendor"
STAMP = "onnxruntime-web.json"


def installed(vendor: Path = VENDOR) -> bool:
    """True when the pinned version's files are all in `vendor`."""
    stamp = vendor / STAMP
    if not stamp.is_file():
        return False
    meta = json.loads(stamp.read_text())
    return meta.get("version") == ORT_WEB_VERSION and all((vendor / f).is_file() for f in FILES)


def fetch(vendor: Path = VENDOR, force: bool = False) -> Path:
    """npm pack the pinned onnxruntime-web and copy its files into `vendor`, written beside
    and swapped in when complete. Raises RuntimeError (with the fix) without npm."""
    if installed(vendor) and not force:
        return vendor
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("npm is not installed: install Node.js and npm (Debian: apt-get "
                           "install npm), then run `python -m deepobfuscator.deploy.web_assets`")
    vendor.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=vendor.parent) as tmp:
        work = Path(tmp)
        # npm checks the tarball against the registry's integrity hash
        proc = subprocess.run([npm, "pack", f"onnxruntime-web@{ORT_WEB_VERSION}", "--silent"],
                              cwd=work, capture_output=True, text=True, timeout=600)
        if proc.returncode != 0:
            raise RuntimeError(f"npm pack onnxruntime-web@{ORT_WEB_VERSION} failed: "
                               f"{proc.stderr.strip()[-500:]}")
        tgz = next(work.glob("onnxruntime-web-*.tgz"))
        staged = work / "vendor"
        staged.mkdir()
        with tarfile.open(tgz) as tar:
            pkg = json.load(tar.extractfile("package/package.json"))  # type: ignore[arg-type]
            for name in FILES:
                member = tar.extractfile(f"package/dist/{name}")
                if member is None:
                    raise RuntimeError(f"onnxruntime-web {ORT_WEB_VERSION} has no dist/{name}")
                (staged / name).write_bytes(member.read())
        (staged / STAMP).write_text(json.dumps(
            {"package": "onnxruntime-web", "version": pkg["version"], "license":
             pkg.get("license"), "files": list(FILES),
             "source": "the npm registry, `npm pack` (integrity-checked)"}, indent=1) + "\n")
        old = vendor.with_name(vendor.name + ".old")
        if vendor.exists():
            vendor.rename(old)
        staged.rename(vendor)
        if old.exists():
            shutil.rmtree(old)
    return vendor


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--force", action="store_true", help="fetch again even when installed")
    ap.add_argument("--optional", action="store_true",
                    help="without npm, warn and exit 0 (the server works without the page)")
    args = ap.parse_args(argv)
    try:
        path = fetch(force=args.force)
    except RuntimeError as exc:
        print(f"{'warning' if args.optional else 'error'}: {exc}", file=sys.stderr)
        return 0 if args.optional else 2
    print(f"onnxruntime-web {ORT_WEB_VERSION} in {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

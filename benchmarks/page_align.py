"""The page's face alignment against the Python client's, on real photos: time per photo
and how far apart their landmarks and aligned frames are.

    python benchmarks/page_align.py --export EXPORT_THAT_ALIGNS \
        [--photos "../shared/data/lfw/lfw/*/*_0001.jpg"] [--every 60] [--count 30]

EXPORT_THAT_ALIGNS: an export of a run trained with data.align=mtcnn (its manifest holds
input.alignment). Needs Chromium and the page's onnxruntime-web (make setup).
"""

from __future__ import annotations

import argparse
import base64
import glob
import io
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the Chromium driver and the live server


def main(argv: list[str] | None = None) -> int:
    import numpy as np
    from browser import Chromium, find_chromium
    from deploy_helpers import LiveServer
    from PIL import Image

    from deepobfuscator.deploy.client import DeviceObfuscator
    from deepobfuscator.deploy.server import create_app

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--export", required=True)
    ap.add_argument("--photos", default="../shared/data/lfw/lfw/*/*_0001.jpg")
    ap.add_argument("--every", type=int, default=60)
    ap.add_argument("--count", type=int, default=30)
    args = ap.parse_args(argv)
    chromium = find_chromium()
    if chromium is None:
        print("Chromium is not installed (Debian: apt-get install chromium)", file=sys.stderr)
        return 2
    device = DeviceObfuscator(args.export, threads=1)
    if device.aligner is None:
        print(f"{args.export} does not align faces: export a run trained with "
              "data.align=mtcnn", file=sys.stderr)
        return 2
    files = sorted(glob.glob(args.photos))[::args.every][:args.count]
    gaps, diffs, page_ms, py_ms = [], [], [], []
    with LiveServer(create_app(args.export)) as server, Chromium(chromium) as browser:
        browser.open(f"{server.url}/")
        browser.wait_for("document.body.dataset.state === 'ready'")
        for f in files:
            img = Image.open(f).convert("RGB")
            t0 = time.perf_counter()
            want = device.aligner.align(img)
            py_ms.append(1000 * (time.perf_counter() - t0))
            buf = io.BytesIO()
            img.save(buf, format="PNG")
            url = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
            browser.evaluate(f"window.deepobfuscator.align('{url}')")  # warm-up
            start = browser.evaluate("performance.now()")
            got = browser.evaluate(f"window.deepobfuscator.align('{url}')")
            page_ms.append(browser.evaluate("performance.now()") - start)
            gaps.append(float(np.abs(np.asarray(got["landmarks"]) - want.face.landmarks).max()))
            frame = np.asarray(got["rgb"], np.float32).reshape(want.image.height,
                                                                want.image.width, 3)
            diffs.append(float(np.abs(frame - np.asarray(want.image, np.float32)).mean()))
    print(json.dumps({"photos": len(files), "page_ms_median": round(statistics.median(page_ms), 1),
                      "python_ms_median": round(statistics.median(py_ms), 1),
                      "landmark_gap_px_max": max(gaps),
                      "frame_mean_abs_levels_max": max(diffs)}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The page in headless Chromium: the on-device time of the obfuscator in the browser
(onnxruntime-web, WebAssembly, one thread) beside onnxruntime in Python on the same input,
and screenshots of the page at a desktop and a phone width.

    python benchmarks/browser_page.py --export runs/demo/export [--audit runs/demo/audit]
        [--image PHOTO] [--runs 50] [--screenshots docs/img]

Needs Chromium and the page's assets (`make setup`). Prints medians in milliseconds.
"""

from __future__ import annotations

import argparse
import base64
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the Chromium driver and the live server


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--export", required=True)
    ap.add_argument("--audit", default=None, help="show the attacker view from this audit")
    ap.add_argument("--image", default=None, help="a photo (default: a rendered face)")
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--screenshots", default=None, help="folder for page-*.png")
    args = ap.parse_args()

    import numpy as np
    from browser import Chromium, find_chromium
    from deploy_helpers import LiveServer

    from deepobfuscator.deploy.bench import _session
    from deepobfuscator.deploy.preprocess_np import load_batch
    from deepobfuscator.deploy.server import create_app

    photo = Path(args.image) if args.image else _rendered_photo()
    url = f"data:image/{photo.suffix.lstrip('.').replace('jpg', 'jpeg')};base64," + \
        base64.b64encode(photo.read_bytes()).decode()
    app = create_app(args.export, token="bench", attacker_view=args.audit)
    chromium = find_chromium()
    if chromium is None:
        sys.exit("Chromium is not installed (Debian: apt-get install chromium)")
    with LiveServer(app) as server, Chromium(chromium) as browser:
        browser.open(f"{server.url}/#token=bench")
        browser.wait_for("document.body.dataset.state === 'ready'")
        browser.evaluate(f"window.deepobfuscator.run('{url}')")  # loads the model: warm-up
        times = browser.evaluate(
            f"(async () => {{ const t = []; for (let i = 0; i < {args.runs}; i++) {{"
            f"  const r = await window.deepobfuscator.run('{url}');"
            "  t.push([r.obfuscatorMs, r.preprocessMs]); } return t; })()")
        if args.screenshots:
            out = Path(args.screenshots)
            out.mkdir(parents=True, exist_ok=True)
            browser.evaluate(f"window.deepobfuscator.show('{url}')")
            browser.wait_for("document.body.dataset.state === 'done'")
            time.sleep(0.5)
            pages = [("page", None)]
            if args.audit:  # the audit's report as people read it, at the same two widths
                pages.append(("report", (Path(args.audit) / "report.html").resolve().as_uri()))
            for kind, address in pages:
                if address:
                    browser.open(address)
                for name, width, height, mobile in (("desktop", 1000, 900, False),
                                                    ("phone", 390, 1100, True)):
                    browser.resize(width, height, mobile)
                    time.sleep(0.3)
                    browser.screenshot(out / f"{kind}-{name}.png")
                    print(f"screenshot: {out / f'{kind}-{name}.png'}")
    x = load_batch([photo], app.state.bundle.preprocessing)
    sess = _session(app.state.bundle.model_path("obfuscator"), 1)
    py = []
    for _ in range(10):
        sess.run(None, {"image": x})
    for _ in range(args.runs):
        t0 = time.perf_counter()
        sess.run(None, {"image": x})
        py.append((time.perf_counter() - t0) * 1e3)
    obf = [t[0] for t in times]
    pre = [t[1] for t in times]
    print(f"photo {photo} ({photo.stat().st_size} B), input {list(x.shape)}, {args.runs} runs")
    print(f"obfuscator, onnxruntime-web in headless Chromium (wasm, 1 thread): median "
          f"{statistics.median(obf):.2f} ms (p90 {np.percentile(obf, 90):.2f})")
    print(f"preprocessing in the page (decode, crop, resize): median "
          f"{statistics.median(pre):.2f} ms")
    print(f"obfuscator, onnxruntime in Python (CPU, 1 thread): median "
          f"{statistics.median(py):.2f} ms (p90 {np.percentile(py, 90):.2f})")


def _rendered_photo() -> Path:
    import tempfile

    from PIL import Image

    from deepobfuscator.data.synthfaces import generate_synthfaces

    path = Path(tempfile.mkdtemp()) / "face.png"
    Image.fromarray(generate_synthfaces(1, 1, (218, 178), seed=0).images[0]).save(path)
    return path


if __name__ == "__main__":
    main()

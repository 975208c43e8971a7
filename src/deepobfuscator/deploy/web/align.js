// Face detection and alignment in the browser: the steps of deepobfuscator/align (MTCNN's
// cascade on the export's three ONNX graphs, the largest face, the similarity transform
// onto the manifest's landmark template, a bilinear warp into its frame), with the
// manifest's own settings. Resizes are the page's Pillow-exact bilinear; the warp follows
// Pillow's affine transform. tests/test_align.py bounds the difference to Python's.

import { resizeBilinear } from "./obfuscator.js";

function rintEven(x) { // numpy's round: half to even
  const f = Math.floor(x), d = x - f;
  if (d > 0.5 || (d === 0.5 && f % 2 !== 0)) return f + 1;
  return f;
}

// uint8 RGB HWC (N images of h x w, back to back) -> float32 NCHW, (v - 127.5) / 128
function normalise(rgb, n, h, w) {
  const out = new Float32Array(n * 3 * h * w);
  for (let k = 0; k < n; k++) {
    for (let i = 0; i < h * w; i++) {
      for (let c = 0; c < 3; c++) {
        const v = rgb[(k * h * w + i) * 3 + c];
        out[((k * 3 + c) * h * w) + i] = Math.fround(Math.fround(v - 127.5) * 0.0078125);
      }
    }
  }
  return out;
}

// boxes: arrays [x1, y1, x2, y2, score, ...]; indices kept, best first
export function nms(boxes, threshold, mode = "union") {
  let order = boxes.map((_, i) => i).sort((a, b) => boxes[b][4] - boxes[a][4] || a - b);
  const area = boxes.map((b) => (b[2] - b[0] + 1) * (b[3] - b[1] + 1));
  const keep = [];
  while (order.length) {
    const i = order[0];
    keep.push(i);
    order = order.slice(1).filter((j) => {
      const w = Math.max(0, Math.min(boxes[i][2], boxes[j][2]) - Math.max(boxes[i][0], boxes[j][0]) + 1);
      const h = Math.max(0, Math.min(boxes[i][3], boxes[j][3]) - Math.max(boxes[i][1], boxes[j][1]) + 1);
      const inter = w * h;
      const denom = mode === "min" ? Math.min(area[i], area[j]) : area[i] + area[j] - inter;
      return inter / denom <= threshold;
    });
  }
  return keep;
}

function square(b) {
  const w = b[2] - b[0], h = b[3] - b[1], side = Math.max(w, h);
  const x1 = b[0] + w / 2 - side / 2, y1 = b[1] + h / 2 - side / 2;
  return [x1, y1, x1 + side, y1 + side, ...b.slice(4)];
}

function regress(b, o) {
  const w = b[2] - b[0], h = b[3] - b[1];
  return [b[0] + o[0] * w, b[1] + o[1] * h, b[2] + o[2] * w, b[3] + o[3] * h, ...b.slice(4)];
}

// each box (rounded) cut from the photo, outside black, resized to side x side
function crops(rgb, W, H, boxes, side) {
  const out = new Uint8Array(boxes.length * side * side * 3);
  boxes.forEach((b, k) => {
    const [x1, y1, x2, y2] = b.slice(0, 4).map(rintEven);
    if (x2 <= x1 || y2 <= y1) return;
    const pw = x2 - x1, ph = y2 - y1;
    const patch = new Uint8Array(pw * ph * 3);
    for (let y = Math.max(y1, 0); y < Math.min(y2, H); y++) {
      for (let x = Math.max(x1, 0); x < Math.min(x2, W); x++) {
        const s = (y * W + x) * 3, d = ((y - y1) * pw + (x - x1)) * 3;
        patch[d] = rgb[s]; patch[d + 1] = rgb[s + 1]; patch[d + 2] = rgb[s + 2];
      }
    }
    out.set(resizeBilinear(patch, pw, ph, side, side), k * side * side * 3);
  });
  return out;
}

// The cascade: every face in an RGB uint8 photo, largest first, in the photo's pixels
export async function detect(ort, sessions, rgb, W, H, s) {
  const run = async (name, x, dims) => {
    const sess = sessions[name];
    const out = await sess.run({ [sess.inputNames[0]]: new ort.Tensor("float32", x, dims) });
    return sess.outputNames.map((n) => out[n]);
  };
  const shrink = Math.min(1, s.detect_side / Math.max(H, W));
  let small = rgb, w0 = W, h0 = H;
  if (shrink < 1) {
    w0 = Math.max(1, rintEven(W * shrink)); h0 = Math.max(1, rintEven(H * shrink));
    small = resizeBilinear(rgb, W, H, w0, h0);
  }
  // stage 1: P-Net over the pyramid
  let scale = 12 / s.min_face, side = Math.min(h0, w0) * scale;
  let cand = [];
  while (side >= 12) {
    const h = Math.ceil(h0 * scale), w = Math.ceil(w0 * scale);
    const [off, prob] = await run("pnet", normalise(resizeBilinear(small, w0, h0, w, h), 1, h, w),
      [1, 3, h, w]);
    const [, , oh, ow] = prob.dims;
    const level = [];
    for (let y = 0; y < oh; y++) {
      for (let x = 0; x < ow; x++) {
        const p = prob.data[oh * ow + y * ow + x];
        if (p > s.thresholds[0]) {
          const reg = [0, 1, 2, 3].map((c) => off.data[c * oh * ow + y * ow + x]);
          level.push([2 * x / scale, 2 * y / scale, (2 * x + 12) / scale, (2 * y + 12) / scale,
            p, ...reg]);
        }
      }
    }
    nms(level, 0.5).forEach((i) => cand.push(level[i]));
    scale *= s.pyramid_factor;
    side *= s.pyramid_factor;
  }
  cand = nms(cand, 0.7).map((i) => cand[i]).map((c) => square(regress(c, c.slice(5, 9))).slice(0, 5));
  if (cand.length) { // stage 2: R-Net
    const [off, prob] = await run("rnet", normalise(crops(small, w0, h0, cand, 24), cand.length, 24, 24),
      [cand.length, 3, 24, 24]);
    let kept = [];
    cand.forEach((c, i) => {
      if (prob.data[i * 2 + 1] > s.thresholds[1]) {
        kept.push([c[0], c[1], c[2], c[3], prob.data[i * 2 + 1], ...off.data.slice(i * 4, i * 4 + 4)]);
      }
    });
    kept = nms(kept, 0.7).map((i) => kept[i]);
    cand = kept.map((c) => square([...regress(c, c.slice(5, 9)).slice(0, 4), c[4]]));
  }
  const faces = [];
  if (cand.length) { // stage 3: O-Net, with the landmarks
    const [off, marks, prob] = await run("onet",
      normalise(crops(small, w0, h0, cand, 48), cand.length, 48, 48), [cand.length, 3, 48, 48]);
    const found = [];
    cand.forEach((c, i) => {
      const p = prob.data[i * 2 + 1];
      if (p <= s.thresholds[2]) return;
      const w = c[2] - c[0], h = c[3] - c[1];
      const pts = [0, 1, 2, 3, 4].map((k) => [c[0] + marks.data[i * 10 + k] * w,
        c[1] + marks.data[i * 10 + 5 + k] * h]);
      found.push([...regress(c, off.data.slice(i * 4, i * 4 + 4)).slice(0, 4), p, pts]);
    });
    for (const i of nms(found, 0.7, "min")) {
      const f = found[i];
      faces.push({ box: f.slice(0, 4).map((v) => v / shrink), score: f[4],
        landmarks: f[5].map(([x, y]) => [x / shrink, y / shrink]) });
    }
  }
  const area = (f) => Math.max(0, f.box[2] - f.box[0]) * Math.max(0, f.box[3] - f.box[1]);
  return faces.sort((a, b) => area(b) - area(a));
}

// The least-squares similarity (no reflection) taking src points onto dst: 2 x 3, row-major
export function similarity(src, dst) {
  const n = src.length;
  const ms = [0, 0], md = [0, 0];
  for (let i = 0; i < n; i++) {
    ms[0] += src[i][0] / n; ms[1] += src[i][1] / n; md[0] += dst[i][0] / n; md[1] += dst[i][1] / n;
  }
  let a = 0, b = 0, ss = 0;
  for (let i = 0; i < n; i++) {
    const sx = src[i][0] - ms[0], sy = src[i][1] - ms[1];
    const dx = dst[i][0] - md[0], dy = dst[i][1] - md[1];
    a += sx * dx + sy * dy;
    b += sx * dy - sy * dx;
    ss += sx * sx + sy * sy;
  }
  a /= ss; b /= ss;
  return [a, -b, md[0] - (a * ms[0] - b * ms[1]), b, a, md[1] - (b * ms[0] + a * ms[1])];
}

// The photo seen through m (photo -> frame) as a frame-sized RGB image: for each output
// pixel centre, the photo position by the inverse transform, sampled bilinearly as
// Pillow's affine transform does (its edge pixels repeated; outside the photo: fill)
export function warp(rgb, W, H, m, frame, fill) {
  const [fw, fh] = frame;
  const det = m[0] * m[4] - m[1] * m[3];
  const inv = [m[4] / det, -m[1] / det, 0, -m[3] / det, m[0] / det, 0];
  inv[2] = -(inv[0] * m[2] + inv[1] * m[5]);
  inv[5] = -(inv[3] * m[2] + inv[4] * m[5]);
  const out = new Uint8Array(fw * fh * 3);
  const clipX = (x) => (x < 0 ? 0 : x < W ? x : W - 1);
  for (let y = 0; y < fh; y++) {
    for (let x = 0; x < fw; x++) {
      let xi = inv[0] * (x + 0.5) + inv[1] * (y + 0.5) + inv[2];
      let yi = inv[3] * (x + 0.5) + inv[4] * (y + 0.5) + inv[5];
      const d = (y * fw + x) * 3;
      if (xi < 0 || xi >= W || yi < 0 || yi >= H) {
        out[d] = fill[0]; out[d + 1] = fill[1]; out[d + 2] = fill[2];
        continue;
      }
      xi -= 0.5; yi -= 0.5;
      const x0 = Math.floor(xi), y0 = Math.floor(yi), dx = xi - x0, dy = yi - y0;
      const ya = y0 < 0 ? 0 : y0, yb = y0 + 1 < H ? y0 + 1 : -1;
      const xa = clipX(x0), xb = clipX(x0 + 1);
      for (let c = 0; c < 3; c++) {
        const r0a = rgb[(ya * W + xa) * 3 + c], r0b = rgb[(ya * W + xb) * 3 + c];
        const v1 = r0a + (r0b - r0a) * dx;
        let v2 = v1;
        if (yb >= 0) {
          const r1a = rgb[(yb * W + xa) * 3 + c], r1b = rgb[(yb * W + xb) * 3 + c];
          v2 = r1a + (r1b - r1a) * dx;
        }
        out[d + c] = Math.trunc(v1 + (v2 - v1) * dy);
      }
    }
  }
  return out;
}

// Detect, take the largest face, warp it into the frame; null when no face is found
export async function align(ort, sessions, rgb, W, H, settings) {
  const faces = await detect(ort, sessions, rgb, W, H, settings);
  if (!faces.length) return null;
  const face = faces[0];
  const m = similarity(face.landmarks, settings.template);
  return { rgb: warp(rgb, W, H, m, settings.frame, settings.fill), face, faces: faces.length,
           matrix: m };
}

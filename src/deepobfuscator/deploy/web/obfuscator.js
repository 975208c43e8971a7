// The device side in the browser: the manifest's preprocessing and the wire format, as
// pure functions (no DOM), so the page and the parity tests (node) run the same code.
// Each mirrors its Python twin bit for bit: preprocessing.py (crop, PIL's bilinear
// resize) and wire.py (int8 per-channel / per-tensor affine, float32).

export const WIRE_VERSION = 2;
const DTYPE_CODE = { float32: 1, float16: 2, int8: 3 };
const QUANT_NONE = 0, QUANT_TENSOR = 1, QUANT_CHANNEL = 2;
const FLOAT32_TINY = 1.1754943508222875e-38;

// ---- preprocessing -------------------------------------------------------------------

export function parseCrop(crop) {
  if (crop === "square" || crop === "none") return [crop, 0];
  const m = /^center:(.+)$/.exec(String(crop));
  if (m) {
    const v = m[1];
    if (v.endsWith("px")) {
      const n = Number(v.slice(0, -2));
      if (Number.isInteger(n) && n >= 1 && /^[0-9]+$/.test(v.slice(0, -2))) return ["pixels", n];
    } else {
      const f = Number(v);
      if (v.trim() !== "" && Number.isFinite(f) && f > 0 && f <= 1) return ["fraction", f];
    }
  }
  throw new Error(`unknown crop ${JSON.stringify(crop)}: use square, none, center:F or center:Npx`);
}

// Python's round(): ties to even (floor(x + 0.5) in preprocessing.crop_box is plain floor)
export function cropBox(width, height, crop) {
  const [kind, value] = parseCrop(crop);
  if (kind === "none") return null;
  const short = Math.min(width, height);
  let side;
  if (kind === "square") side = short;
  else if (kind === "fraction") side = Math.max(1, Math.min(short, Math.floor(value * short + 0.5)));
  else side = Math.min(short, Math.trunc(value));
  const left = Math.floor((width - side) / 2), top = Math.floor((height - side) / 2);
  return [left, top, left + side, top + side];
}

const PRECISION_BITS = 32 - 8 - 2; // Pillow's fixed-point precision for 8-bit resampling

function bilinear(x) {
  x = Math.abs(x);
  return x < 1 ? 1 - x : 0;
}

// Pillow's precompute_coeffs + normalize_coeffs_8bpc: per output pixel, the first input
// pixel, how many it reads, and integer weights
function coefficients(inSize, outSize) {
  const scale = inSize / outSize;
  const filterscale = Math.max(scale, 1);
  const support = 1.0 * filterscale;
  const ksize = Math.ceil(support) * 2 + 1;
  const bounds = new Int32Array(outSize * 2);
  const kk = new Int32Array(outSize * ksize);
  const w = new Float64Array(ksize);
  for (let xx = 0; xx < outSize; xx++) {
    const center = (xx + 0.5) * scale;
    const ss = 1.0 / filterscale;
    let xmin = Math.trunc(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    let xmax = Math.trunc(center + support + 0.5);
    if (xmax > inSize) xmax = inSize;
    xmax -= xmin;
    let ww = 0;
    for (let x = 0; x < xmax; x++) {
      w[x] = bilinear((x + xmin - center + 0.5) * ss);
      ww += w[x];
    }
    for (let x = 0; x < ksize; x++) {
      let v = x < xmax && ww !== 0 ? w[x] / ww : 0;
      v *= 1 << PRECISION_BITS;
      kk[xx * ksize + x] = v < 0 ? Math.trunc(-0.5 + v) : Math.trunc(0.5 + v);
    }
    bounds[xx * 2] = xmin;
    bounds[xx * 2 + 1] = xmax;
  }
  return { ksize, bounds, kk };
}

function clip8(ss) {
  const v = Math.floor(ss / (1 << PRECISION_BITS)); // ss >> 22 on a value beyond int32
  return v < 0 ? 0 : v > 255 ? 255 : v;
}

// One 1-D pass of Pillow's 8-bit resampling over RGB (3 bytes per pixel), along x
// (horizontal) or y: the intermediate image is uint8, as in Pillow.
function pass(src, w, h, outW, outH, horizontal) {
  const { ksize, bounds, kk } = coefficients(horizontal ? w : h, horizontal ? outW : outH);
  const out = new Uint8Array(outW * outH * 3);
  const half = 1 << (PRECISION_BITS - 1);
  for (let yy = 0; yy < outH; yy++) {
    for (let xx = 0; xx < outW; xx++) {
      const i = horizontal ? xx : yy;
      const xmin = bounds[i * 2], xmax = bounds[i * 2 + 1];
      let s0 = half, s1 = half, s2 = half;
      for (let x = 0; x < xmax; x++) {
        const k = kk[i * ksize + x];
        const p = horizontal ? (yy * w + x + xmin) * 3 : ((x + xmin) * w + xx) * 3;
        s0 += src[p] * k;
        s1 += src[p + 1] * k;
        s2 += src[p + 2] * k;
      }
      const o = (yy * outW + xx) * 3;
      out[o] = clip8(s0);
      out[o + 1] = clip8(s1);
      out[o + 2] = clip8(s2);
    }
  }
  return out;
}

// PIL's Image.resize(..., BILINEAR) on RGB uint8 (HWC): horizontal pass, then vertical
export function resizeBilinear(rgb, w, h, outW, outH) {
  let img = rgb, cw = w;
  if (outW !== w) {
    img = pass(img, w, h, outW, h, true);
    cw = outW;
  }
  if (outH !== h) img = pass(img, cw, h, cw, outH, false);
  return img;
}

// RGBA (canvas ImageData) -> RGB uint8 HWC of the crop box
export function cropRGB(rgba, width, box) {
  const [l, t, r, b] = box;
  const w = r - l, h = b - t;
  const out = new Uint8Array(w * h * 3);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const s = ((y + t) * width + x + l) * 4, d = (y * w + x) * 3;
      out[d] = rgba[s];
      out[d + 1] = rgba[s + 1];
      out[d + 2] = rgba[s + 2];
    }
  }
  return out;
}

// RGBA pixels of a decoded photo -> uint8 RGB (H, W, 3) per the manifest's input section
export function preprocess(rgba, width, height, input) {
  if (input.resample !== "bilinear") {
    throw new Error(`this page implements the bilinear resize only, the export asks for ${input.resample}`);
  }
  const box = cropBox(width, height, input.crop) ?? [0, 0, width, height];
  const rgb = cropRGB(rgba, width, box);
  const [th, tw] = input.size;
  return resizeBilinear(rgb, box[2] - box[0], box[3] - box[1], tw, th);
}

// uint8 HWC -> float32 NCHW (N = 1) in [0, 1]: value / 255 in float32, as numpy does
export function toInput(rgb, h, w) {
  const x = new Float32Array(3 * h * w);
  for (let c = 0; c < 3; c++) {
    for (let i = 0; i < h * w; i++) x[c * h * w + i] = Math.fround(rgb[i * 3 + c] / 255);
  }
  return x;
}

// ---- the wire format -------------------------------------------------------------------

function rintEven(x) { // numpy's rint: round half to even
  const f = Math.floor(x), d = x - f;
  if (d < 0.5) return f;
  if (d > 0.5) return f + 1;
  return f % 2 === 0 ? f : f + 1;
}

function affineParams(lo, hi) {
  lo = Math.min(lo, 0);
  hi = Math.max(hi, 0);
  const span = hi - lo;
  const scale = span > 0 ? Math.fround(Math.max(span / 255, FLOAT32_TINY)) : 1;
  const zero = Math.min(127, Math.max(-128, rintEven(-128 - lo / scale)));
  return [scale, zero];
}

// Features (Float32Array of shape [n, c, h, w]) -> the wire body (Uint8Array)
export function encode(features, shape, dtype = "int8", perChannel = true) {
  const [n, c, h, w] = shape;
  const count = n * c * h * w;
  if (features.length !== count) throw new Error("features do not match their shape");
  for (let i = 0; i < count; i++) {
    if (!Number.isFinite(features[i])) throw new Error("features contain NaN or infinity");
  }
  if (!(dtype in DTYPE_CODE) || dtype === "float16") {
    throw new Error(`this page sends int8 or float32 features, the export asks for ${dtype}`);
  }
  const quant = dtype === "int8" ? (perChannel ? QUANT_CHANNEL : QUANT_TENSOR) : QUANT_NONE;
  const groups = quant === QUANT_CHANNEL ? n * c : quant === QUANT_TENSOR ? n : 0;
  const itemsize = dtype === "int8" ? 1 : 4;
  const head = 8 + 16;
  const buf = new ArrayBuffer(head + 8 * groups + count * itemsize);
  const view = new DataView(buf);
  [0x44, 0x4f, 0x42, 0x46].forEach((b, i) => view.setUint8(i, b)); // "DOBF"
  view.setUint8(4, WIRE_VERSION);
  view.setUint8(5, DTYPE_CODE[dtype]);
  view.setUint8(6, quant);
  view.setUint8(7, 4);
  shape.forEach((d, i) => view.setUint32(8 + 4 * i, d, true));
  const payload = head + 8 * groups;
  if (quant === QUANT_NONE) {
    for (let i = 0; i < count; i++) view.setFloat32(payload + 4 * i, features[i], true);
    return new Uint8Array(buf);
  }
  const size = count / groups; // values per (image, channel) or per image
  for (let g = 0; g < groups; g++) {
    let lo = Infinity, hi = -Infinity;
    for (let i = g * size; i < (g + 1) * size; i++) {
      lo = Math.min(lo, features[i]);
      hi = Math.max(hi, features[i]);
    }
    const [scale, zero] = affineParams(lo, hi);
    view.setFloat32(head + 4 * g, scale, true);
    view.setInt32(head + 4 * groups + 4 * g, zero, true);
    for (let i = g * size; i < (g + 1) * size; i++) {
      const q = rintEven(features[i] / scale) + zero;
      view.setInt8(payload + i, Math.min(127, Math.max(-128, q)));
    }
  }
  return new Uint8Array(buf);
}

// ---- the feature noise -----------------------------------------------------------------

// One standard normal from two uint32 (Box-Muller); (u0 + 1) / (2^32 + 1) is never 0
function boxMuller(u0, u1) {
  const a = (u0 + 1) / 4294967297, b = u1 / 4294967296;
  return Math.sqrt(-2 * Math.log(a)) * Math.cos(2 * Math.PI * b);
}

// Gaussian noise of std `std` from the platform's cryptographic source, fresh for every
// upload (manifest features.noise_key "fresh"): the noise the classifier was trained with
export function addNoise(features, std, randomValues) {
  if (!(std > 0)) return features;
  const out = new Float32Array(features.length);
  const u = new Uint32Array(2);
  for (let i = 0; i < features.length; i++) {
    randomValues(u);
    out[i] = features[i] + std * boxMuller(u[0], u[1]);
  }
  return out;
}

// Noise keyed to the photo (noise_key "photo"), the twin of deploy/keyed_noise.py: the same
// photo always carries the same noise, so a server sent it N times cannot average the
// noise away. key = HMAC-SHA256(secret, "deepobfuscator-noise-v1" + round(x * 255) as
// uint8); block i = SHA-256(key || i, 4 bytes big-endian) = 8 little-endian uint32 = 4
// normals. Web Crypto is async, and browsers give it to secure pages only.
const NOISE_DOMAIN = new TextEncoder().encode("deepobfuscator-noise-v1");
const SECRET_BYTES = 32;

function subtleCrypto() {
  const subtle = globalThis.crypto?.subtle;
  if (!subtle) {
    throw new Error("noise keyed to the photo needs the browser's Web Crypto (crypto.subtle), " +
      "which it gives only to secure pages: open this page over https or on localhost");
  }
  return subtle;
}

// One photo's (3, H, W) float32 model input -> uint8 round(x * 255), C order (numpy's rint:
// half to even, computed in float64, clipped to 0..255)
export function quantise(x) {
  const q = new Uint8Array(x.length);
  for (let i = 0; i < x.length; i++) q[i] = Math.min(255, Math.max(0, rintEven(x[i] * 255)));
  return q;
}

// The 32-byte noise key of one photo (Uint8Array)
export async function photoKey(secret, x) {
  if (!(secret instanceof Uint8Array) || secret.length !== SECRET_BYTES) {
    throw new Error(`a device secret is ${SECRET_BYTES} random bytes`);
  }
  const subtle = subtleCrypto();
  const key = await subtle.importKey("raw", secret, { name: "HMAC", hash: "SHA-256" }, false,
    ["sign"]);
  const msg = new Uint8Array(NOISE_DOMAIN.length + x.length);
  msg.set(NOISE_DOMAIN);
  msg.set(quantise(x), NOISE_DOMAIN.length);
  return new Uint8Array(await subtle.sign("HMAC", key, msg));
}

// n float32 standard normals drawn from `key` by SHA-256 in counter mode
export async function keyedNormal(key, n) {
  const subtle = subtleCrypto();
  const blocks = Math.ceil(n / 4);
  const digests = await Promise.all(Array.from({ length: blocks }, (_, i) => {
    const msg = new Uint8Array(key.length + 4);
    msg.set(key);
    new DataView(msg.buffer).setUint32(key.length, i, false);
    return subtle.digest("SHA-256", msg);
  }));
  const out = new Float32Array(n);
  digests.forEach((d, b) => {
    const v = new DataView(d);
    for (let j = 0; j < 4 && 4 * b + j < n; j++) {
      out[4 * b + j] = boxMuller(v.getUint32(8 * j, true), v.getUint32(8 * j + 4, true));
    }
  });
  return out;
}

// Features of one photo plus noise of std `std` keyed by photoKey(secret, its input)
export async function addKeyedNoise(features, std, key) {
  if (!(std > 0)) return features;
  const g = await keyedNormal(key, features.length);
  const out = new Float32Array(features.length);
  for (let i = 0; i < features.length; i++) out[i] = features[i] + std * g[i];
  return out;
}

// This browser's device secret: 32 bytes of crypto.getRandomValues, made once and kept as
// hex in `storage` (the page's localStorage) under this name; it never leaves the device
export const SECRET_ITEM = "deepobfuscator-device-secret";

export function deviceSecret(storage, randomValues) {
  let hex = storage.getItem(SECRET_ITEM);
  if (hex === null) {
    const fresh = new Uint8Array(SECRET_BYTES);
    randomValues(fresh);
    storage.setItem(SECRET_ITEM, Array.from(fresh, (v) => v.toString(16).padStart(2, "0"))
      .join(""));
    hex = storage.getItem(SECRET_ITEM); // another tab may have won: use what is kept
  }
  if (!/^[0-9a-f]{64}$/i.test(hex ?? "")) {
    throw new Error("this browser's stored device secret is malformed: clear this site's " +
      "data in the browser settings and a new one is made");
  }
  return Uint8Array.from(hex.match(/../g), (h) => parseInt(h, 16));
}

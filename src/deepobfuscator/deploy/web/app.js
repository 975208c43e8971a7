// The page: runs the exported obfuscator in this browser (onnxruntime-web, WebAssembly),
// sends only the wire-format features to /v1/classify, and shows what left the device.
import {
  addKeyedNoise, addNoise, deviceSecret, encode, photoKey, preprocess, toInput,
} from "./obfuscator.js";
import { align } from "./align.js";

const $ = (id) => document.getElementById(id);
const state = { manifest: null, session: null, ort: null, view: null, baseline: null,
  face: null };

function token() {
  return $("token").value.trim();
}

function authHeaders() {
  const t = token();
  return t ? { Authorization: `Bearer ${t}` } : {};
}

async function getJSON(url) {
  const r = await fetch(url, { headers: authHeaders() });
  const body = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(`${url}: ${r.status} ${body.error ?? ""} ${body.detail ?? ""}`);
  return body;
}

function show(id, text) {
  $(id).textContent = text;
}

function fmtBytes(n) {
  return n >= 1024 ? `${(n / 1024).toFixed(1)} KB (${n.toLocaleString("en")} B)` : `${n} B`;
}

async function loadModel() {
  if (state.session) return;
  show("status", "loading the obfuscator...");
  state.manifest = await getJSON("/v1/manifest");
  let ort;
  try {
    ort = await import("./vendor/ort.wasm.bundle.min.mjs");
  } catch (e) {
    throw new Error("onnxruntime-web is not installed beside the server: run `make web` " +
      "(or `python -m deepobfuscator.deploy.web_assets`) and restart `deepobfuscator serve`");
  }
  ort.env.wasm.wasmPaths = new URL("./vendor/", import.meta.url).href;
  ort.env.wasm.numThreads = 1; // threads need cross-origin isolation; one is enough here
  const r = await fetch("/v1/obfuscator.onnx", { headers: authHeaders() });
  if (!r.ok) throw new Error(`/v1/obfuscator.onnx: ${r.status}`);
  state.session = await ort.InferenceSession.create(new Uint8Array(await r.arrayBuffer()),
    { executionProviders: ["wasm"] });
  state.ort = ort;
  state.face = null;
  const aligns = (state.manifest.input.align ?? "none") !== "none";
  if (aligns) { // the export finds and aligns the face first: its detector runs here too
    state.face = {};
    for (const net of Object.keys(state.manifest.input.alignment.graphs)) {
      const g = await fetch(`/v1/face/${net}.onnx`, { headers: authHeaders() });
      if (!g.ok) throw new Error(`/v1/face/${net}.onnx: ${g.status}`);
      state.face[net] = await ort.InferenceSession.create(new Uint8Array(await g.arrayBuffer()),
        { executionProviders: ["wasm"] });
    }
  }
  state.view = null;
  const v = await fetch("/v1/attacker-view", { headers: authHeaders() });
  if (v.ok) { // the server shows what its attacker rebuilds (serve --attacker-view)
    state.view = await v.json();
    const bm = await fetch("/v1/attacker-view/baseline.onnx", { headers: authHeaders() });
    state.baseline = await ort.InferenceSession.create(new Uint8Array(await bm.arrayBuffer()),
      { executionProviders: ["wasm"] });
  }
  const m = state.manifest, b = m.budget;
  const names = m.tasks ? m.tasks.map((t) => t.name) : [m.task.name];
  const keyed = noiseKey(m) === "photo";
  show("model", `${names.length > 1 ? "tasks" : "task"} ${names.join(", ")}; input ` +
    `${m.input.size.join(" x ")} px, ${aligns ? "the face found and aligned, then " : ""}crop ` +
    `${m.input.crop}; features ${m.features.shape.join(" x ")} sent as ${m.wire.dtype}` +
    (m.features.noise_std ? ` with noise of std ${m.features.noise_std}` +
      (keyed ? ", keyed to the photo" : ", fresh for every upload") : ""));
  // the small print about the device secret: shown until the export says it keys no noise
  $("noise-note").hidden = !(m.features.noise_std > 0 && keyed);
  if (b) {
    show("split", `phone ${(b.phone_macs / 1e6).toFixed(1)} M MACs (this browser), cloud ` +
      `${(b.cloud_macs / 1e6).toFixed(1)} M MACs: the phone runs ` +
      `${(100 * b.phone_share).toFixed(0)}% of the model (VGG blocks 1-${b.split_block}` +
      `${b.bottleneck ? ` + a ${b.bottleneck}-channel bottleneck` : ""})`);
  }
}

// "photo" (noise keyed to the photo) or "fresh"; an export without the field is "fresh"
function noiseKey(m) {
  return m.features.noise_key ?? "fresh";
}

// decode exactly as stored: no colour conversion; a photo with transparency is drawn over
// white, as the Python client composites it (preprocessing.on_white)
async function pixels(blob) {
  const bmp = await createImageBitmap(blob, { colorSpaceConversion: "none",
    premultiplyAlpha: "none" });
  const canvas = new OffscreenCanvas(bmp.width, bmp.height);
  const ctx = canvas.getContext("2d", { colorSpace: "srgb" });
  ctx.fillStyle = "#ffffff";
  ctx.fillRect(0, 0, bmp.width, bmp.height);
  ctx.drawImage(bmp, 0, 0);
  return { rgba: ctx.getImageData(0, 0, bmp.width, bmp.height).data, width: bmp.width,
           height: bmp.height };
}

async function gzip(bytes) {
  if (typeof CompressionStream === "undefined") return null;
  const stream = new Blob([bytes]).stream().pipeThrough(new CompressionStream("gzip"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

// The whole device side for one photo; returns what the page shows (and the tests read)
export async function run(blob, options = {}) {
  await loadModel();
  const m = state.manifest;
  const t0 = performance.now();
  const photo = await pixels(blob);
  const { width, height } = photo;
  const [h, w] = m.input.size;
  const found = state.face ? await alignPhoto(photo) : null;
  const rgb = found ? preprocess(rgbaOf(found.rgb), ...m.input.alignment.frame, m.input)
    : preprocess(photo.rgba, width, height, m.input);
  const x = toInput(rgb, h, w);
  const t1 = performance.now();
  const out = await state.session.run({
    [state.session.inputNames[0]]: new state.ort.Tensor("float32", x, [1, 3, h, w]) });
  let z = out[state.session.outputNames[0]].data;
  const t2 = performance.now();
  if (options.noise !== false && m.features.noise_std > 0) {
    if (noiseKey(m) === "photo") { // the same photo, the same noise: repeats add nothing
      const secret = deviceSecret(localStorage, (a) => crypto.getRandomValues(a));
      z = await addKeyedNoise(z, m.features.noise_std, await photoKey(secret, x));
    } else {
      z = addNoise(z, m.features.noise_std, (a) => crypto.getRandomValues(a));
    }
  }
  const wire = encode(z, [1, ...m.features.shape], m.wire.dtype,
    m.wire.quantization === "per-channel affine");
  const packed = await gzip(wire);
  const body = packed && packed.length < wire.length ? packed : wire;
  const headers = { "Content-Type": "application/octet-stream", ...authHeaders() };
  if (body !== wire) headers["Content-Encoding"] = "gzip";
  const r = await fetch("/v1/classify", { method: "POST", headers, body });
  const answer = await r.json();
  if (!r.ok) throw new Error(`/v1/classify: ${r.status} ${answer.error}: ${answer.detail}`);
  const p = answer.predictions[0];
  const views = state.view ? await attackerViews(wire, x, h, w) : null;
  // every task's answer, in the manifest's order; a one-task export also keeps its
  // task, probability and label at the top, as before
  return { task: answer.task, probability: p.probability, label: p.label,
           tasks: answer.tasks, answers: p.answers, views,
           modelInput: Array.from(rgb), inputSize: [h, w],
           alignment: found && { faces: found.faces, box: found.face.box,
             landmarks: found.face.landmarks, frame: m.input.alignment.frame,
             rgb: Array.from(found.rgb) },
           photoBytes: blob.size, width, height, wireBytes: wire.length, sentBytes: body.length,
           preprocessMs: t1 - t0, obfuscatorMs: t2 - t1, features: Array.from(z),
           wire: Array.from(wire) };
}

function rgbOf(rgba) {
  const out = new Uint8Array((rgba.length / 4) * 3);
  for (let i = 0, j = 0; i < rgba.length; i += 4, j += 3) {
    out[j] = rgba[i]; out[j + 1] = rgba[i + 1]; out[j + 2] = rgba[i + 2];
  }
  return out;
}

function rgbaOf(rgb) {
  const out = new Uint8ClampedArray((rgb.length / 3) * 4);
  for (let i = 0, j = 0; i < rgb.length; i += 3, j += 4) {
    out[j] = rgb[i]; out[j + 1] = rgb[i + 1]; out[j + 2] = rgb[i + 2]; out[j + 3] = 255;
  }
  return out;
}

// The face found and aligned as the export says (deepobfuscator.align): never a guess
async function alignPhoto(photo) {
  const found = await align(state.ort, state.face, rgbOf(photo.rgba), photo.width,
    photo.height, state.manifest.input.alignment);
  if (!found) {
    throw new Error("no face found in the photo: use a photo in which a face is clearly " +
      "visible (at least 20 pixels high); nothing was sent");
  }
  return found;
}

// The photo with the face found boxed, and the aligned frame the model's crop comes from
function showAlignment(a) {
  const photo = $("photo");
  const canvas = $("found");
  const scale = Math.min(1, 320 / Math.max(photo.naturalWidth, photo.naturalHeight));
  canvas.width = Math.round(photo.naturalWidth * scale);
  canvas.height = Math.round(photo.naturalHeight * scale);
  const ctx = canvas.getContext("2d");
  ctx.drawImage(photo, 0, 0, canvas.width, canvas.height);
  ctx.strokeStyle = "#ffcc00";
  ctx.lineWidth = 2;
  const [x1, y1, x2, y2] = a.box.map((v) => v * scale);
  ctx.strokeRect(x1, y1, x2 - x1, y2 - y1);
  ctx.fillStyle = "#ffcc00";
  for (const [x, y] of a.landmarks) ctx.fillRect(x * scale - 2, y * scale - 2, 4, 4);
  const [fw, fh] = a.frame;
  const out = $("aligned");
  out.width = fw;
  out.height = fh;
  out.getContext("2d").putImageData(new ImageData(rgbaOf(a.rgb), fw, fh), 0, 0);
  show("faces", a.faces > 1 ? `${a.faces} faces found: the largest was answered`
    : "one face found");
  $("alignment").hidden = false;
}

async function postImage(url, body) {
  const r = await fetch(url, { method: "POST", body, headers: {
    "Content-Type": "application/octet-stream", ...authHeaders() } });
  if (!r.ok) throw new Error(`${url}: ${r.status}`);
  return URL.createObjectURL(await r.blob());
}

// What the server's attacker rebuilds: from exactly the bytes just sent, and from the
// no-privacy baseline's features of the same photo (its obfuscator run here, on request)
async function attackerViews(wire, x, h, w) {
  const fromSent = await postImage("/v1/attacker-view/obfuscated", wire);
  const out = await state.baseline.run({
    [state.baseline.inputNames[0]]: new state.ort.Tensor("float32", x, [1, 3, h, w]) });
  const bw = state.view.baseline.wire;
  const zb = out[state.baseline.outputNames[0]].data;
  const baseWire = encode(zb, [1, ...state.view.baseline.features.shape], bw.dtype,
    bw.quantization === "per-channel affine");
  const fromBaseline = await postImage("/v1/attacker-view/baseline", baseWire);
  return { fromSent, fromBaseline, baselineBytes: baseWire.length };
}

function showModelInput(rgb, h, w) {
  const canvas = $("seen");
  canvas.width = w;
  canvas.height = h;
  const img = new ImageData(w, h);
  for (let i = 0; i < h * w; i++) {
    img.data.set([rgb[i * 3], rgb[i * 3 + 1], rgb[i * 3 + 2], 255], i * 4);
  }
  canvas.getContext("2d").putImageData(img, 0, 0);
}

// One line per task: binary "Smiling: yes (probability 0.930)", multi-class
// "hair: Blond_Hair (probability 0.700)", the top class
export function answerLines(res) {
  const answers = res.answers ??
    { [res.task]: { probability: res.probability, label: res.label } }; // an older server
  const names = res.tasks ?? Object.keys(answers);
  return names.map((name) => {
    const a = answers[name];
    const what = a.class !== undefined ? a.class : (a.label ? "yes" : "no");
    return `${name}: ${what} (probability ${a.probability.toFixed(3)})`;
  });
}

async function handle(blob, name) {
  try {
    show("status", `running the obfuscator on ${name} in this browser...`);
    const res = await run(blob);
    $("photo").src = URL.createObjectURL(blob);
    if (res.alignment) {
      await $("photo").decode();
      showAlignment(res.alignment);
    } else {
      $("alignment").hidden = true;
    }
    show("answer", answerLines(res).join("\n"));
    show("bytes", `sent ${fmtBytes(res.sentBytes)} of features; the photo is ` +
      `${fmtBytes(res.photoBytes)} (${res.width} x ${res.height}) and never left this device`);
    show("time", `on this device: preprocessing ${res.preprocessMs.toFixed(1)} ms, ` +
      `obfuscator ${res.obfuscatorMs.toFixed(1)} ms`);
    if (res.views) {
      showModelInput(res.modelInput, ...res.inputSize);
      $("from-sent").src = res.views.fromSent;
      $("from-baseline").src = res.views.fromBaseline;
      show("baseline-bytes", `${fmtBytes(res.views.baselineBytes)} without the defence`);
      $("attacker").hidden = false;
    }
    show("status", "done");
    document.body.dataset.state = "done";
  } catch (e) {
    show("status", `error: ${e.message}`);
    document.body.dataset.state = "error";
  }
}

// The camera, where the browser offers one: a frame taken from it goes the same way as
// a dropped photo (the photo itself never leaves the device)
function initCamera() {
  if (!navigator.mediaDevices?.getUserMedia) return; // no camera API (or not a secure origin)
  $("camera").hidden = false;
  let stream = null;
  const stop = () => {
    stream?.getTracks().forEach((t) => t.stop());
    stream = null;
    $("camera-view").hidden = true;
  };
  $("camera").addEventListener("click", async () => {
    try {
      stream = await navigator.mediaDevices.getUserMedia({ video: { facingMode: "user" } });
    } catch (e) {
      show("status", `error: the camera is not available (${e.name}): drop a photo instead`);
      document.body.dataset.state = "error";
      return;
    }
    $("preview").srcObject = stream;
    $("camera-view").hidden = false;
  });
  $("camera-off").addEventListener("click", stop);
  $("snap").addEventListener("click", async () => {
    const v = $("preview");
    if (!v.videoWidth) await new Promise((ok) => v.addEventListener("loadeddata", ok, { once: true }));
    const canvas = new OffscreenCanvas(v.videoWidth, v.videoHeight);
    canvas.getContext("2d").drawImage(v, 0, 0);
    const blob = await canvas.convertToBlob({ type: "image/png" });
    stop();
    await handle(blob, "the camera's photo");
  });
}

function init() {
  const fromHash = new URLSearchParams(location.hash.slice(1)).get("token");
  $("token").value = fromHash ?? sessionStorage.getItem("deepobfuscator-token") ?? "";
  $("token").addEventListener("change", () => {
    sessionStorage.setItem("deepobfuscator-token", token());
    state.session = null;
  });
  $("file").addEventListener("change", (e) => {
    const f = e.target.files[0];
    if (f) handle(f, f.name);
  });
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    const f = e.dataTransfer.files[0];
    if (f) handle(f, f.name);
  });
  initCamera();
  // for scripted use (the browser test): run on a data: URL, same path as a dropped file
  window.deepobfuscator = {
    run: async (dataUrl) => run(await (await fetch(dataUrl)).blob()),
    show: async (dataUrl) => handle(await (await fetch(dataUrl)).blob(), "the photo"),
    // the face found and aligned, without sending anything (the parity test)
    align: async (dataUrl) => {
      await loadModel();
      const found = await alignPhoto(await pixels(await (await fetch(dataUrl)).blob()));
      return { faces: found.faces, box: found.face.box, landmarks: found.face.landmarks,
               rgb: Array.from(found.rgb) };
    },
  };
  document.body.dataset.state = "ready";
}

init();

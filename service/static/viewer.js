// The lrpseg viewer: choose a model and options, upload an image (or a sample), follow the
// job, look at the result, and re-render the heatmap with another threshold in the browser.
// Talks only to this origin: the public /v1 API plus /viewer/preview and /viewer/colors.json.

import * as R from "./render.js";

const $ = (id) => document.getElementById(id);
const KEY_STORAGE = "lrpseg.apiKey";
const POLL_MS = 250;
const POLL_LIMIT_MS = 15 * 60 * 1000;
const SETUP_ERROR = "Cannot load the models:";

// What is on screen belongs to ONE input and at most ONE job made from it. A new input (file,
// sample, drop, frame) replaces `input` whole and clears the result; a job keeps the input it
// was submitted with, and anything it draws is dropped unless it is still `state.job`.
const state = {
  models: [],
  colors: null, // { lut, palette }
  input: null, // { id, image: File, preview: { bitmap, width, height, rgba } | null }
  truth: null, // the chosen ground-truth file (sent with the next job)
  region: null, // { x0, y0, x1, y1 } in image pixels of `input`
  drag: null,
  job: null, // { id, input, params, view }: the job on screen (running or done)
  relevance: null, // { height, width, values, stats } of `job`
  objectUrls: [],
  get preview() { return this.input ? this.input.preview : null; },
};
let inputCount = 0;

// ---- HTTP ------------------------------------------------------------------------------

function headers(extra = {}) {
  const key = $("api-key").value.trim();
  return key ? { ...extra, "X-API-Key": key } : extra;
}

/** Same-origin path of an absolute URL the API built (so a proxy's host name cannot matter). */
function localPath(url) {
  const u = new URL(url, window.location.href);
  return u.pathname + u.search;
}

async function problemText(response) {
  let text = `${response.status} ${response.statusText}`;
  try {
    const body = await response.json();
    text = `${body.title || response.status}: ${body.detail || ""}`;
    if (Array.isArray(body.errors) && body.errors.length) {
      text += "\n" + body.errors.map((e) => `• ${e.field}: ${e.message}`).join("\n");
    }
  } catch (_) { /* not JSON */ }
  if (response.status === 401 || response.status === 403) text += "\n(Check the API key field.)";
  return text;
}

async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: headers(options.headers || {}), credentials: "same-origin" });
  if (!response.ok) throw new Error(await problemText(response));
  return response;
}

// ---- set-up ----------------------------------------------------------------------------

async function loadModels() {
  const body = await (await api("/v1/models")).json();
  if ($("form-error").textContent.startsWith(SETUP_ERROR)) $("form-error").textContent = "";
  state.models = body.models;
  const select = $("model");
  select.replaceChildren();
  for (const m of body.models) {
    const option = new Option(`${m.id} (${m.kind})`, m.id, m.id === body.default, m.id === body.default);
    select.append(option);
  }
  modelChanged();
}

function currentModel() {
  return state.models.find((m) => m.id === $("model").value) || null;
}

function modelChanged() {
  const m = currentModel();
  const classes = $("target-class");
  classes.replaceChildren(new Option("default", ""));
  if (!m) return;
  m.class_names.forEach((name) => classes.append(new Option(name, name)));
  const size = m.input_size ? `fixed input ${m.input_size}×${m.input_size}` : "any input size";
  $("model-info").textContent = `${m.in_channels} channel(s), classes: ${m.class_names.join(", ")}; ${size}. ${m.description || ""}`;
  $("resize").disabled = !m.input_size;
}

async function loadSamples() {
  const response = await fetch("/static/samples/index.json");
  if (!response.ok) return;
  for (const s of await response.json()) {
    $("sample").append(new Option(`${s.title} (${s.width}×${s.height})`, JSON.stringify(s)));
  }
}

async function loadColors() {
  state.colors = await (await fetch("/viewer/colors.json")).json();
  drawColorbar();
}

function syncForm() {
  const explain = $("task").value === "explain";
  const lrp = $("method").value === "lrp";
  $("method").disabled = !explain;
  $("composite").disabled = !explain || !lrp;
  $("target-kind").disabled = !explain;
  $("target-class").disabled = !explain;
  $("mask-fields").disabled = !explain;
  const regional = explain && $("target-kind").value.startsWith("region");
  $("region-fields").disabled = !regional;
  const percentile = $("threshold-mode").value === "percentile";
  $("threshold").max = percentile ? "100" : "1";
}

// ---- image input -----------------------------------------------------------------------

// ---- errors: shown until the person's next action (a new input, Run, another model) ----------

function showError(text) {
  $("form-error").textContent = text;
}

function clearError() {
  $("form-error").textContent = "";
}

/** A new input: nothing of the previous one (result, region, region target, errors) stays. */
async function setImage(file, { truth = null } = {}) {
  clearError();
  state.job = null; // a job still running for the old input will draw nothing
  clearResult();
  state.input = { id: `input-${++inputCount}`, image: file, preview: null };
  state.region = null;
  writeRegionInputs();
  if ($("target-kind").value.startsWith("region")) { // a region belongs to the image it was drawn on
    $("target-kind").value = "class";
    syncForm();
  }
  $("submit").disabled = false;
  setProgress(0, "New input: press Run to explain it.");
  $("image-note").textContent = `${file.name} (${file.size.toLocaleString()} bytes)`;
  if (truth !== undefined) setTruth(truth);
  await showPreview(state.input);
}

function setTruth(file) {
  state.truth = file;
  $("truth-note").textContent = file ? `Ground truth: ${file.name}` : "";
}

async function showPreview(input) {
  if (!input) return;
  const form = new FormData();
  form.append("image", input.image, input.image.name);
  const frame = $("frame").value.trim();
  if (frame !== "") form.append("frame", frame);
  $("image-note").textContent = `${input.image.name}: decoding…`;
  const canvas = $("input-canvas");
  try {
    const response = await api("/viewer/preview", { method: "POST", body: form });
    const bitmap = await createImageBitmap(await response.blob());
    if (state.input !== input) return; // another input came while this one decoded
    const scratch = document.createElement("canvas");
    scratch.width = bitmap.width;
    scratch.height = bitmap.height;
    const context = scratch.getContext("2d");
    context.drawImage(bitmap, 0, 0);
    const rgba = context.getImageData(0, 0, bitmap.width, bitmap.height).data;
    input.preview = { bitmap, width: bitmap.width, height: bitmap.height, rgba };
    const channels = response.headers.get("X-Image-Channels");
    $("image-note").textContent = `${input.image.name}: ${bitmap.width}×${bitmap.height}, ${channels} channel(s)`;
    canvas.setAttribute("aria-label", `The input image, ${bitmap.width} by ${bitmap.height} pixels`);
    drawInput();
  } catch (error) {
    if (state.input !== input) return;
    input.preview = null;
    canvas.width = 0; // never the previous image beside this input's name
    canvas.height = 0;
    $("image-note").textContent = "";
    showError(`The image cannot be shown: ${error.message}`);
  }
  canvas.dataset.input = input.id;
  canvas.dataset.name = input.image.name;
}

function drawInput() {
  const canvas = $("input-canvas");
  const p = state.preview;
  if (!p) return;
  canvas.width = p.width;
  canvas.height = p.height;
  const context = canvas.getContext("2d");
  context.drawImage(p.bitmap, 0, 0);
  const box = state.region;
  if (box) {
    const line = Math.max(1, Math.round(Math.max(p.width, p.height) / 200));
    context.lineWidth = line;
    context.strokeStyle = "#ffd400";
    context.setLineDash([3 * line, 2 * line]);
    context.strokeRect(box.x0 + line / 2, box.y0 + line / 2, box.x1 - box.x0 - line, box.y1 - box.y0 - line);
  }
}

function pixelAt(event) {
  const canvas = $("input-canvas");
  const rect = canvas.getBoundingClientRect();
  // The canvas is letterboxed by object-fit: contain; undo that to get image pixels.
  const scale = Math.min(rect.width / canvas.width, rect.height / canvas.height);
  const left = rect.left + (rect.width - canvas.width * scale) / 2;
  const top = rect.top + (rect.height - canvas.height * scale) / 2;
  const x = Math.floor((event.clientX - left) / scale);
  const y = Math.floor((event.clientY - top) / scale);
  return { x: Math.min(Math.max(x, 0), canvas.width - 1), y: Math.min(Math.max(y, 0), canvas.height - 1) };
}

function startDrag(event) {
  if (!state.preview || event.button !== 0) return;
  event.preventDefault();
  $("input-canvas").setPointerCapture(event.pointerId);
  state.drag = pixelAt(event);
  updateDrag(event);
}

function updateDrag(event) {
  if (!state.drag) return;
  const a = state.drag;
  const b = pixelAt(event);
  state.region = {
    x0: Math.min(a.x, b.x), y0: Math.min(a.y, b.y), x1: Math.max(a.x, b.x) + 1, y1: Math.max(a.y, b.y) + 1,
  };
  writeRegionInputs();
  drawInput();
}

function endDrag(event) {
  if (!state.drag) return;
  updateDrag(event);
  state.drag = null;
  if ($("target-kind").value === "class" || $("target-kind").value === "all") {
    $("target-kind").value = "region"; // drawing a box means "explain this region"
    syncForm();
  }
}

function writeRegionInputs() {
  for (const k of ["x0", "y0", "x1", "y1"]) $(k).value = state.region ? String(state.region[k]) : "";
}

function readRegionInputs() {
  const values = ["x0", "y0", "x1", "y1"].map((k) => $(k).value.trim());
  if (values.some((v) => v === "")) {
    state.region = null;
  } else {
    const [x0, y0, x1, y1] = values.map(Number);
    state.region = { x0, y0, x1, y1 };
  }
  drawInput();
}

// ---- submit and follow -----------------------------------------------------------------

function buildParams() {
  const params = { model: $("model").value, task: $("task").value };
  if (params.task === "explain") {
    params.method = $("method").value;
    if (params.method === "lrp") params.lrp = { composite: $("composite").value };
    const target = { kind: $("target-kind").value };
    if ($("target-class").value !== "") target.cls = $("target-class").value;
    if (target.kind.startsWith("region")) {
      if (!state.region) throw new Error("Draw a region on the input image (or type x0, y0, x1, y1) to explain a region.");
      target.region = [state.region];
    }
    params.target = target;
    params.masks = ["simple", "gmm", "bmm", "component"].filter((m) => $(`mask-${m}`).checked);
  }
  params.visualisation = {
    threshold: Number($("threshold").value),
    threshold_mode: $("threshold-mode").value,
    transfer: document.querySelector("input[name=transfer]:checked").value,
  };
  if ($("resize").checked && !$("resize").disabled) params.resize = true;
  const frame = $("frame").value.trim();
  if (frame !== "") params.frame = Number(frame);
  const input = {}; // how to read the values (lrpseg.io.levels); empty: the model's defaults
  if ($("input-bits").value.trim() !== "") input.bits = Number($("input-bits").value);
  if ($("input-channels").value !== "") input.channels = $("input-channels").value;
  if (Object.keys(input).length) params.input = input;
  return params;
}

async function submit(event) {
  event.preventDefault();
  clearError();
  if (!state.input) {
    showError("Choose an image file, drop one on the drop zone, or pick a sample.");
    return;
  }
  let params;
  try {
    params = buildParams();
  } catch (error) {
    showError(error.message);
    return;
  }
  const job = { id: null, input: state.input, params, view: null };
  const form = new FormData();
  form.append("image", job.input.image, job.input.image.name);
  if (state.truth) form.append("ground_truth", state.truth, state.truth.name);
  form.append("params", JSON.stringify(params));
  $("submit").disabled = true;
  state.job = job;
  clearResult();
  $("results").dataset.state = "running";
  setProgress(0, "Uploading…");
  try {
    const accepted = await (await api("/v1/jobs", { method: "POST", body: form })).json();
    job.id = accepted.job_id;
    const view = await follow(localPath(accepted.links.self), job);
    if (state.job !== job) return; // a new input or job took the screen meanwhile
    job.view = view;
    if (view.status === "finished") {
      await showResult(view, job);
    } else {
      const why = view.error ? `${view.error.code}: ${view.error.detail}` : view.status;
      setProgress(1, `The job ${view.status}: ${why}`);
      $("results").dataset.state = view.status;
      showError(`The job ${view.status}: ${why}`);
    }
  } catch (error) {
    if (state.job !== job) return;
    setProgress(0, "Not submitted.");
    $("results").removeAttribute("data-state");
    showError(error.message);
  } finally {
    if (state.job === job || state.job === null) $("submit").disabled = false;
  }
}

function setProgress(fraction, text) {
  $("progress").value = fraction;
  $("progress-text").textContent = text;
}

async function follow(path, job) {
  const started = Date.now();
  let last = "";
  while (Date.now() - started < POLL_LIMIT_MS) {
    if (state.job !== job) return null; // the screen moved on; stop asking
    const view = await (await api(path)).json();
    if (state.job !== job) return null;
    const { status } = view;
    if (status === "finished" || status === "failed" || status === "canceled") return view;
    let text;
    if (status === "queued") {
      text = view.position === null || view.position === undefined ? "Queued" : `Queued (position ${view.position + 1})`;
      $("progress").value = 0;
    } else {
      const p = view.progress || { stage: "started", fraction: 0 };
      text = `Running: ${p.stage} (${Math.round(p.fraction * 100)} %)`;
      $("progress").value = p.fraction;
    }
    if (text !== last) { $("progress-text").textContent = text; last = text; }
    await new Promise((resolve) => { setTimeout(resolve, POLL_MS); });
  }
  throw new Error("Gave up waiting for the job after 15 minutes; it may still finish (see /v1/jobs).");
}

// ---- result ----------------------------------------------------------------------------

function clearResult() {
  state.objectUrls.forEach((u) => URL.revokeObjectURL(u));
  state.objectUrls = [];
  state.relevance = null;
  for (const id of ["segmentation-canvas", "heatmap-canvas", "overlay-canvas"]) {
    const c = $(id);
    c.width = 0;
    c.height = 0;
  }
  $("results").removeAttribute("data-job");
  $("results").removeAttribute("data-input");
  $("results").removeAttribute("data-state");
  $("class-legend").replaceChildren();
  $("mask-figures").replaceChildren();
  $("metrics").replaceChildren();
  $("download-list").replaceChildren();
  $("downloads").hidden = true;
  $("fig-pr").hidden = true;
  $("scale-note").textContent = "";
  $("colorbar-ticks").replaceChildren();
  $("display-controls").disabled = true;
}

async function artifactBlob(view, name) {
  const url = view.links.artifacts && view.links.artifacts[name];
  if (!url) return null;
  return (await api(localPath(url))).blob();
}

function objectUrl(blob) {
  const url = URL.createObjectURL(blob);
  state.objectUrls.push(url);
  return url;
}

async function showResult(view, job) {
  const result = view.result;
  setProgress(1, `Finished in ${Math.round(result.timings.total)} ms (${result.model.id}, ${result.device || "?"}).`);
  const names = new Set(Object.keys(view.links.artifacts || {}));
  const [segmentation, npy, overlayPng, pr] = await Promise.all([
    names.has("segmentation.png") ? artifactBlob(view, "segmentation.png") : null,
    names.has("relevance.npy") ? artifactBlob(view, "relevance.npy") : null,
    names.has("overlay.png") ? artifactBlob(view, "overlay.png") : null,
    names.has("pr-curve.png") ? artifactBlob(view, "pr-curve.png") : null,
  ]);
  if (state.job !== job) return; // the artifacts of a job that is no longer on screen
  $("fig-segmentation").hidden = !segmentation; // classifiers have none
  if (segmentation) await drawSegmentation(segmentation, result);
  if (npy) {
    const summed = R.sumChannels(R.parseNpy(await npy.arrayBuffer()));
    state.relevance = { ...summed, stats: R.magnitudes(summed.values), serverOverlay: overlayPng };
    initDisplayControls(result.params.visualisation);
    renderHeatmap();
  } else if (names.has("relevance.png")) {
    await drawBlob($("heatmap-canvas"), await artifactBlob(view, "relevance.png"));
  }
  await showMasks(view, result);
  if (state.job !== job) return;
  if (pr) {
    $("pr-image").src = objectUrl(pr);
    $("fig-pr").hidden = false;
  }
  showMetrics(result);
  showDownloads(view);
  $("results").dataset.job = view.job_id;
  $("results").dataset.input = job.input.id; // the tests check it against the input on screen
  $("results").dataset.state = "done";
}

async function drawBlob(canvas, blob) {
  const bitmap = await createImageBitmap(blob);
  canvas.width = bitmap.width;
  canvas.height = bitmap.height;
  canvas.getContext("2d").drawImage(bitmap, 0, 0);
  return bitmap;
}

async function drawSegmentation(blob, result) {
  const canvas = $("segmentation-canvas");
  const bitmap = await createImageBitmap(blob);
  const { width, height } = bitmap;
  canvas.width = width;
  canvas.height = height;
  const context = canvas.getContext("2d");
  context.drawImage(bitmap, 0, 0);
  const labels = context.getImageData(0, 0, width, height);
  if (state.preview) context.drawImage(state.preview.bitmap, 0, 0, width, height);
  else context.clearRect(0, 0, width, height);
  const out = context.getImageData(0, 0, width, height);
  for (let i = 0; i < labels.data.length; i += 4) {
    const [r, g, b] = [labels.data[i], labels.data[i + 1], labels.data[i + 2]];
    if (r || g || b) { // class 0 (background) is black: leave the input visible there
      out.data[i] = (out.data[i] + r) / 2;
      out.data[i + 1] = (out.data[i + 1] + g) / 2;
      out.data[i + 2] = (out.data[i + 2] + b) / 2;
    }
    out.data[i + 3] = 255;
  }
  context.putImageData(out, 0, 0);
  const legend = $("class-legend");
  legend.replaceChildren();
  const palette = state.colors ? state.colors.palette : [];
  const parts = [];
  for (const c of (result.segmentation && result.segmentation.classes) || []) {
    if (c.index === 0) continue;
    const span = document.createElement("span");
    const swatch = document.createElement("i");
    const colour = palette[c.index] || [128, 128, 128];
    swatch.style.backgroundColor = `rgb(${colour.join(",")})`;
    span.append(swatch, `${c.name} ${(100 * c.share).toFixed(1)} %`);
    legend.append(span);
    parts.push(`${c.name} ${(100 * c.share).toFixed(1)} percent`);
  }
  canvas.setAttribute("aria-label", `Segmentation over the input: ${parts.join(", ") || "no foreground"}`);
}

// schemas.params.THRESHOLD_DEFAULTS: each threshold mode's default value.
const THRESHOLD_DEFAULTS = { mass: R.DEFAULT_MASS, percentile: 50, fraction: 0.05 };

function initDisplayControls(vis) {
  $("view-mode").value = vis.threshold_mode;
  setSliderRange(vis.threshold_mode, vis.threshold);
  $(vis.transfer === "linear" ? "view-linear" : "view-log").checked = true;
  $("display-controls").disabled = false;
  syncSlider();
}

function setSliderRange(mode, value) {
  const slider = $("view-threshold");
  if (mode === "percentile") { slider.min = "0"; slider.max = "100"; slider.step = "0.5"; } else { slider.min = "0"; slider.max = "1"; slider.step = "0.005"; }
  slider.value = String(value);
}

function viewOptions() {
  const mode = document.querySelector("input[name=view-transfer]:checked").value;
  const thresholdMode = $("view-mode").value;
  const threshold = Number($("view-threshold").value);
  return { mode, [thresholdMode]: threshold }; // mass, percentile or fraction: render.resolveTau's keys
}

function syncSlider() {
  const linear = document.querySelector("input[name=view-transfer]:checked").value === "linear";
  $("view-threshold").disabled = linear;
  $("view-mode").disabled = linear;
  const value = Number($("view-threshold").value);
  const labels = { percentile: `${value} %`, fraction: `${value} × max`, mass: `${+(value * 100).toFixed(1)} % of Σ|R|` };
  $("view-threshold-value").value = labels[$("view-mode").value];
}

function renderHeatmap() {
  const rel = state.relevance;
  if (!rel || !state.colors) return;
  const options = viewOptions();
  const { values, tau, peak } = R.transfer(rel.values, options, rel.stats);
  const heat = $("heatmap-canvas");
  heat.width = rel.width;
  heat.height = rel.height;
  const colours = R.colorize(values, state.colors.lut);
  heat.getContext("2d").putImageData(new ImageData(colours, rel.width, rel.height), 0, 0);
  const threshold = options.mode === "linear" ? "linear scale" : `log scale, |R| < ${fmt(tau)} shown as 0`;
  heat.setAttribute("aria-label", `Relevance heatmap, ${threshold}; red positive, blue negative`);
  $("scale-note").textContent = `(max |R| ${fmt(peak)}; ${threshold})`;
  const over = $("overlay-canvas");
  const p = state.preview;
  if (p && p.width === rel.width && p.height === rel.height) {
    over.width = rel.width;
    over.height = rel.height;
    const blended = R.overlay(values, p.rgba, state.colors.lut, 0.5, colours);
    over.getContext("2d").putImageData(new ImageData(blended, rel.width, rel.height), 0, 0);
    over.dataset.source = "browser";
  } else if (rel.serverOverlay) { // the model saw a resized image: show the job's own overlay
    drawBlob(over, rel.serverOverlay);
    over.dataset.source = "job";
  }
  over.setAttribute("aria-label", `Relevance over the input, ${threshold}`);
  drawTicks(peak, tau, options.mode);
  heat.dataset.view = JSON.stringify(options); // what is drawn now (the tests wait for it)
  $("results").dataset.rendered = String(Number($("results").dataset.rendered || 0) + 1);
}

let renderPending = false;

/** Slider moves come faster than a large map renders: draw once per frame, with the latest value. */
function scheduleRender() {
  if (renderPending) return;
  renderPending = true;
  requestAnimationFrame(() => { renderPending = false; renderHeatmap(); });
}

function drawColorbar() {
  const canvas = $("colorbar-canvas");
  const n = canvas.width;
  const values = Float64Array.from({ length: n }, (_, i) => -1 + (2 * i) / (n - 1));
  canvas.getContext("2d").putImageData(new ImageData(R.colorize(values, state.colors.lut), n, 1), 0, 0);
}

function drawTicks(peak, tau, mode) {
  const ticks = $("colorbar-ticks");
  ticks.replaceChildren();
  if (!(peak > 0)) return;
  for (const v of [-1, 0, 1]) { // more labels do not fit under a quarter of a laptop screen
    const span = document.createElement("span");
    span.style.left = `${((v + 1) / 2) * 100}%`;
    span.textContent = v === 0 ? "0" : fmt(R.inverseTransfer(v, { peak, tau, mode }));
    ticks.append(span);
  }
}

async function showMasks(view, result) {
  const box = $("mask-figures");
  for (const [name, summary] of Object.entries(result.masks || {})) {
    const blob = await artifactBlob(view, `mask-${name}.png`);
    if (!blob) continue;
    const figure = document.createElement("figure");
    const img = document.createElement("img");
    img.src = objectUrl(blob);
    img.alt = `${name.toUpperCase()} mask: ${summary.pixels} pixels (${(100 * summary.share).toFixed(1)} %) marked white`;
    const caption = document.createElement("figcaption");
    caption.textContent = `${name.toUpperCase()} mask`;
    figure.append(img, caption);
    box.append(figure);
  }
}

// ---- metrics ---------------------------------------------------------------------------

function get(object, path) {
  return path.split(".").reduce((o, k) => (o === null || o === undefined ? undefined : o[k]), object);
}

/** A number as shown: 4 significant digits, integers as they are; null as a dash. */
export function fmt(value) {
  if (value === null || value === undefined) return "—";
  if (typeof value !== "number") return String(value);
  if (Number.isInteger(value)) return String(value);
  const a = Math.abs(value);
  return a !== 0 && (a < 1e-3 || a >= 1e5) ? value.toExponential(3) : String(Number(value.toPrecision(4)));
}

function table(caption, rows, result, { wide = false } = {}) {
  const present = rows.filter(([, path]) => get(result, path) !== undefined);
  if (!present.length) return null;
  const t = document.createElement("table");
  if (wide) t.className = "wide";
  t.createCaption().textContent = caption;
  const body = t.createTBody();
  for (const [label, path] of present) {
    const value = get(result, path);
    const row = body.insertRow();
    const th = document.createElement("th");
    th.scope = "row";
    th.textContent = label;
    const td = row.insertCell();
    row.prepend(th);
    td.dataset.path = path;
    td.dataset.value = JSON.stringify(value);
    td.textContent = fmt(value);
  }
  return t;
}

function maskTable(result) {
  const names = Object.keys(result.masks || {});
  if (!names.length) return null;
  const columns = [
    ["pixels", "pixels"], ["share", "share"],
    ["IoU vs model", "vs_model.iou"], ["precision vs model", "vs_model.precision"], ["recall vs model", "vs_model.recall"],
    ["IoU vs truth", "vs_ground_truth.iou"], ["precision vs truth", "vs_ground_truth.precision"],
    ["recall vs truth", "vs_ground_truth.recall"], ["AP vs truth", "average_precision"],
  ].filter(([, p]) => names.some((n) => get(result.masks[n], p) !== undefined && get(result.masks[n], p) !== null));
  const t = document.createElement("table");
  t.className = "wide";
  t.createCaption().textContent = "Masks from the relevance";
  const head = t.createTHead().insertRow();
  for (const label of ["mask", ...columns.map(([l]) => l)]) {
    const th = document.createElement("th");
    th.scope = "col";
    th.textContent = label;
    head.append(th);
  }
  const body = t.createTBody();
  for (const name of names) {
    const row = body.insertRow();
    const th = document.createElement("th");
    th.scope = "row";
    th.textContent = name.toUpperCase();
    row.append(th);
    for (const [, p] of columns) {
      const path = `masks.${name}.${p}`;
      const value = get(result, path);
      const td = row.insertCell();
      td.dataset.path = path;
      td.dataset.value = JSON.stringify(value === undefined ? null : value);
      td.textContent = fmt(value);
    }
  }
  return t;
}

function showMetrics(result) {
  const box = $("metrics");
  const parts = [];
  const classes = ((result.segmentation && result.segmentation.classes) || []).flatMap((c, i) => [
    [`${c.name} pixels`, `segmentation.classes.${i}.pixels`], [`${c.name} share`, `segmentation.classes.${i}.share`],
  ]);
  parts.push(table("Segmentation", classes, result));
  if (result.classification) {
    const probs = Object.keys(result.classification.probabilities).map((k) => [`P(${k})`, `classification.probabilities.${k}`]);
    parts.push(table("Classification", [["predicted", "classification.predicted_name"], ...probs], result));
  }
  parts.push(table("Explanation", [
    ["method", "explanation.method"], ["composite", "explanation.composite"], ["target", "explanation.target"],
    ["class", "explanation.cls_name"], ["explained pixels", "explanation.explained_pixels"],
    ["Σ relevance", "explanation.relevance_sum"], ["Σ r_out", "explanation.r_out_sum"],
    ["conservation", "explanation.conservation"], ["bias share", "explanation.bias_share"],
    ["mass inside the target", "explanation.metrics.relevance_mass_accuracy"],
    ["pointing game", "explanation.metrics.pointing_game"], ["negative share", "explanation.metrics.negative_share"],
    ["max |R|", "explanation.display.max_abs"], ["τ (job)", "explanation.display.tau"],
  ], result));
  parts.push(table("Against the ground truth", [
    ["positive pixels", "ground_truth.positive_pixels"], ["no-skill precision", "ground_truth.no_skill"],
    ["model IoU", "ground_truth.model.iou"], ["model precision", "ground_truth.model.precision"],
    ["model recall", "ground_truth.model.recall"], ["model Dice", "ground_truth.model.dice"],
    ["relevance AP", "ground_truth.relevance_average_precision"],
  ], result));
  parts.push(table("Timings (ms)", ["decode", "forward", "lrp", "masks", "metrics", "render", "total"].map(
    (s) => [s, `timings.${s}`],
  ), result));
  parts.push(maskTable(result));
  box.replaceChildren(...parts.filter(Boolean));
  if (result.warnings && result.warnings.length) {
    const list = document.createElement("ul");
    list.className = "warnings wide";
    list.setAttribute("aria-label", "Warnings");
    result.warnings.forEach((w) => { const li = document.createElement("li"); li.textContent = w; list.append(li); });
    box.append(list);
  }
}

function showDownloads(view) {
  const list = $("download-list");
  list.replaceChildren();
  const sizes = Object.fromEntries((view.result.artifacts || []).map((a) => [a.name, a.bytes]));
  const all = { ...(view.links.artifacts || {}) };
  for (const [name, url] of Object.entries(all)) {
    const li = document.createElement("li");
    const a = document.createElement("a");
    a.href = localPath(url);
    a.download = `${view.job_id}-${name}`;
    a.textContent = name;
    a.addEventListener("click", (event) => { event.preventDefault(); download(a.href, a.download); });
    li.append(a, ` (${(sizes[name] || 0).toLocaleString()} bytes)`);
    list.append(li);
  }
  const json = document.createElement("li");
  const a = document.createElement("a");
  a.href = objectUrl(new Blob([JSON.stringify(view, null, 2)], { type: "application/json" }));
  a.download = `${view.job_id}-job.json`;
  a.textContent = "job.json (this result)";
  json.append(a);
  list.append(json);
  $("downloads").hidden = false;
}

async function download(path, filename) {
  try {
    const blob = await (await api(path)).blob();
    const a = document.createElement("a");
    a.href = objectUrl(blob);
    a.download = filename;
    document.body.append(a);
    a.click();
    a.remove();
  } catch (error) {
    showError(`Download failed: ${error.message}`);
  }
}

// ---- wiring ----------------------------------------------------------------------------

function wire() {
  const key = $("api-key");
  key.value = sessionStorage.getItem(KEY_STORAGE) || "";
  key.addEventListener("input", () => sessionStorage.setItem(KEY_STORAGE, key.value));
  key.addEventListener("change", () => { loadModels().catch(showSetupError); });

  $("image-file").addEventListener("change", (e) => {
    const file = e.target.files[0];
    if (file) { $("sample").value = ""; setImage(file, { truth: state.truth && !state.truth.sample ? state.truth : null }); }
  });
  $("truth-file").addEventListener("change", (e) => setTruth(e.target.files[0] || null));
  $("frame").addEventListener("change", () => { // another frame is another input
    if (state.input) setImage(state.input.image, { truth: undefined });
  });
  $("sample").addEventListener("change", async (e) => {
    if (!e.target.value) return;
    const s = JSON.parse(e.target.value);
    const [image, truth] = await Promise.all(
      [s.image, s.ground_truth].map(async (f) => new File([await (await fetch(`/static/samples/${f}`)).blob()], f, { type: "image/png" })),
    );
    truth.sample = true;
    $("image-file").value = "";
    $("truth-file").value = "";
    await setImage(image, { truth });
  });

  const zone = $("drop-zone");
  zone.addEventListener("click", () => $("image-file").click());
  zone.addEventListener("keydown", (e) => {
    if (e.key === "Enter" || e.key === " ") { e.preventDefault(); $("image-file").click(); }
  });
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("dragging"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("dragging"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("dragging");
    const file = e.dataTransfer.files[0];
    if (file) { $("sample").value = ""; setImage(file, { truth: null }); }
  });

  const canvas = $("input-canvas");
  canvas.addEventListener("pointerdown", startDrag);
  canvas.addEventListener("pointermove", updateDrag);
  canvas.addEventListener("pointerup", endDrag);
  canvas.addEventListener("pointercancel", () => { state.drag = null; });
  for (const k of ["x0", "y0", "x1", "y1"]) $(k).addEventListener("input", readRegionInputs);
  $("clear-region").addEventListener("click", () => { state.region = null; writeRegionInputs(); drawInput(); });

  $("model").addEventListener("change", () => { clearError(); modelChanged(); });
  for (const id of ["task", "method", "target-kind", "threshold-mode"]) $(id).addEventListener("change", syncForm);
  $("threshold-mode").addEventListener("change", () => { $("threshold").value = String(THRESHOLD_DEFAULTS[$("threshold-mode").value]); });
  $("job-form").addEventListener("submit", submit);

  $("view-threshold").addEventListener("input", () => { syncSlider(); scheduleRender(); });
  $("view-mode").addEventListener("change", () => {
    setSliderRange($("view-mode").value, THRESHOLD_DEFAULTS[$("view-mode").value]);
    syncSlider();
    renderHeatmap();
  });
  for (const id of ["view-log", "view-linear"]) $(id).addEventListener("change", () => { syncSlider(); renderHeatmap(); });
  syncForm();
}

function showSetupError(error) {
  showError(`${SETUP_ERROR} ${error.message}`);
}

wire();
Promise.all([loadModels().catch(showSetupError), loadSamples(), loadColors()]).then(() => {
  document.body.dataset.ready = "true";
});

// Seed 000's threshold + log transfer and the relevance colormap, as lrpseg.render computes them.
//
// Pure functions (no DOM), so the page and the tests use the same code. Every step mirrors
// lrpseg/render/transfer.py and colors.py: tau from the non-zero |R| (numpy's linear
// percentile, or a fraction of max |R|), log1p via logaddexp, index rounding half to even
// like np.rint. tests/service/test_viewer.py compares the results with the Python ones.

export const DEFAULT_MASS = 0.9; // render.transfer.DEFAULT_MASS: the pixels holding 90 % of sum |R|
export const DEFAULT_PERCENTILE = 50;

// ---- .npy ------------------------------------------------------------------------------

const DTYPES = {
  "<f4": Float32Array, "<f8": Float64Array, "|u1": Uint8Array, "<i4": Int32Array,
};

/** Parse a NumPy .npy file (versions 1-3, little-endian f4/f8/u1/i4, C order). */
export function parseNpy(buffer) {
  const bytes = new Uint8Array(buffer);
  const magic = [0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59]; // \x93NUMPY
  if (bytes.length < 10 || magic.some((b, i) => bytes[i] !== b)) {
    throw new Error("not a .npy file");
  }
  const major = bytes[6];
  const view = new DataView(buffer);
  const headerLength = major === 1 ? view.getUint16(8, true) : view.getUint32(8, true);
  const start = major === 1 ? 10 : 12;
  const header = new TextDecoder("latin1").decode(bytes.subarray(start, start + headerLength));
  const descr = /'descr':\s*'([^']+)'/.exec(header);
  const order = /'fortran_order':\s*(True|False)/.exec(header);
  const shapeText = /'shape':\s*\(([^)]*)\)/.exec(header);
  if (!descr || !order || !shapeText) throw new Error("unreadable .npy header");
  if (order[1] === "True") throw new Error(".npy in Fortran order is not supported");
  const Type = DTYPES[descr[1]];
  if (!Type) throw new Error(`unsupported .npy dtype ${descr[1]}`);
  const shape = shapeText[1].split(",").map((s) => s.trim()).filter((s) => s !== "").map(Number);
  const count = shape.reduce((a, b) => a * b, 1);
  const offset = start + headerLength;
  const end = offset + count * Type.BYTES_PER_ELEMENT;
  if (end > buffer.byteLength) throw new Error(".npy file is truncated");
  const data = new Type(buffer.slice(offset, end)); // a copy: aligned whatever the header length
  return { shape, dtype: descr[1], data };
}

/** (C, H, W) -> (H, W) as float64, summed over channels in order (numpy's sum(0, dtype=float64)). */
export function sumChannels(npy) {
  const { shape, data } = npy;
  if (shape.length !== 3) throw new Error(`relevance must be (C, H, W), got shape (${shape.join(", ")})`);
  const [c, h, w] = shape;
  const plane = h * w;
  const out = new Float64Array(plane);
  for (let k = 0; k < c; k += 1) {
    const base = k * plane;
    for (let i = 0; i < plane; i += 1) out[i] += data[base + i];
  }
  return { height: h, width: w, values: out };
}

// ---- transfer --------------------------------------------------------------------------

/** numpy.percentile(sorted, p) with the default "linear" method, including its lerp. */
export function percentileLinear(sorted, p) {
  const n = sorted.length;
  const virtual = (n - 1) * (p / 100);
  let lo = Math.floor(virtual);
  lo = Math.min(Math.max(lo, 0), n - 1);
  const hi = Math.min(lo + 1, n - 1);
  const t = virtual - Math.floor(virtual);
  const a = sorted[lo];
  const b = sorted[hi];
  const diff = b - a;
  return t >= 0.5 ? b - diff * (1 - t) : a + diff * t;
}

/** Largest |R| and the sorted non-zero |R| (what every threshold is computed from). */
export function magnitudes(values) {
  let peak = 0;
  let count = 0;
  for (let i = 0; i < values.length; i += 1) {
    const m = Math.abs(values[i]);
    if (m > 0) count += 1;
    if (m > peak) peak = m;
  }
  const nonzero = new Float64Array(count);
  let j = 0;
  for (let i = 0; i < values.length; i += 1) {
    const m = Math.abs(values[i]);
    if (m > 0) { nonzero[j] = m; j += 1; }
  }
  nonzero.sort();
  return { peak, nonzero };
}

/**
 * render.transfer.mass_tau on the ascending non-zero |R|: the smallest |R| of the fewest pixels
 * that hold `mass` of sum |R|. Same order of additions as np.cumsum over the descending values
 * divided by max |R|, so the same tau to the last bit.
 */
export function massTau(nonzero, mass) {
  if (!(mass >= 0 && mass <= 1)) throw new RangeError(`mass must be within [0, 1], got ${mass}`);
  const n = nonzero.length;
  if (n === 0) return 0;
  const peak = nonzero[n - 1];
  let total = 0;
  for (let i = n - 1; i >= 0; i -= 1) total += nonzero[i] / peak;
  const target = mass * total;
  let running = 0;
  for (let i = n - 1; i >= 0; i -= 1) {
    running += nonzero[i] / peak;
    if (running >= target) return nonzero[i];
  }
  return nonzero[0];
}

const given = (v) => v !== null && v !== undefined;

/** tau in relevance units (render.resolve_tau): give mass (0-1, the default), percentile (0-100) or fraction (0-1). */
export function resolveTau(stats, { percentile = null, fraction = null, mass = null } = {}) {
  const { peak, nonzero } = stats;
  if (nonzero.length === 0) return 0;
  let value;
  if (given(fraction)) {
    if (!(fraction >= 0 && fraction <= 1)) throw new RangeError(`fraction must be within [0, 1], got ${fraction}`);
    value = fraction * peak;
  } else if (given(percentile)) {
    if (!(percentile >= 0 && percentile <= 100)) throw new RangeError(`percentile must be within [0, 100], got ${percentile}`);
    value = percentileLinear(nonzero, percentile);
  } else {
    value = massTau(nonzero, given(mass) ? mass : DEFAULT_MASS);
  }
  return value > 0 ? value : nonzero[0];
}

/** numpy.logaddexp(x, y). */
export function logaddexp(x, y) {
  if (x === y) return x + Math.LN2;
  const d = x - y;
  if (d > 0) return x + Math.log1p(Math.exp(-d));
  if (d <= 0) return y + Math.log1p(Math.exp(d));
  return d; // NaN
}

/**
 * log(1 + magnitude / tau) (transfer.log1p_ratio). Python goes through logaddexp so that a
 * tiny tau cannot overflow; here the direct form (4x faster per pixel, equal to ~1e-16) is
 * used wherever magnitude / tau is finite, and logaddexp only where it overflows.
 */
export function log1pRatio(magnitude, tau) {
  const ratio = magnitude / tau;
  return Number.isFinite(ratio) ? Math.log1p(ratio) : logaddexp(0, Math.log(magnitude) - Math.log(tau));
}

/**
 * Relevance -> transfer values in [-1, 1] (render.log_transfer).
 * options: { mode: "log" | "linear", mass, percentile, fraction }; returns { values, tau, peak }.
 */
export function transfer(values, options = {}, stats = null) {
  const mode = options.mode || "log";
  const s = stats || magnitudes(values);
  const out = new Float64Array(values.length);
  const { peak } = s;
  if (peak === 0) return { values: out, tau: mode === "log" ? 0 : null, peak };
  if (mode === "linear") {
    for (let i = 0; i < values.length; i += 1) out[i] = values[i] / peak;
    return { values: out, tau: null, peak };
  }
  if (mode !== "log") throw new RangeError(`mode must be 'log' or 'linear', got ${mode}`);
  const tau = resolveTau(s, options);
  const denominator = log1pRatio(peak, tau);
  for (let i = 0; i < values.length; i += 1) {
    const r = values[i];
    const m = Math.abs(r);
    if (m >= tau) {
      const v = (Math.sign(r) * log1pRatio(m, tau)) / denominator;
      out[i] = Math.min(1, Math.max(-1, v));
    }
  }
  return { values: out, tau, peak };
}

/** The relevance whose transfer value is v (render.inverse_transfer; colour-bar labels). */
export function inverseTransfer(v, { peak, tau, mode = "log" }) {
  if (mode === "linear") return v * peak;
  const magnitude = tau * Math.expm1(Math.abs(v) * log1pRatio(peak, tau));
  return Math.sign(v) * Math.min(magnitude, peak);
}

// ---- colours ---------------------------------------------------------------------------

/** np.rint: round half to even. */
export function rint(x) {
  const f = Math.floor(x);
  const d = x - f;
  if (d > 0.5) return f + 1;
  if (d < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
}

const flatLuts = new WeakMap();

/** The (n, 3) LUT as one flat byte array (cached per LUT). */
function flat(lut) {
  let bytes = flatLuts.get(lut);
  if (!bytes) {
    bytes = Uint8Array.from(lut.flat());
    flatLuts.set(lut, bytes);
  }
  return bytes;
}

/** Transfer values -> RGBA bytes through the LUT ((n, 3) colours, n odd: 0 -> the centre). */
export function colorize(values, lut, rgba = new Uint8ClampedArray(values.length * 4)) {
  const half = (lut.length - 1) / 2;
  const table = flat(lut);
  for (let i = 0; i < values.length; i += 1) {
    const v = Math.min(1, Math.max(-1, values[i]));
    const j = 3 * rint((v + 1) * half);
    rgba[4 * i] = table[j];
    rgba[4 * i + 1] = table[j + 1];
    rgba[4 * i + 2] = table[j + 2];
    rgba[4 * i + 3] = 255;
  }
  return rgba;
}

/**
 * The heatmap blended over the input (render.overlay_rgb): opacity alpha * |v|.
 * base: RGBA bytes of the input at the relevance's size; heat: colorize(values) if already made.
 */
export function overlay(values, base, lut, alpha = 0.5, heat = colorize(values, lut)) {
  const out = new Uint8ClampedArray(values.length * 4);
  for (let i = 0; i < values.length; i += 1) {
    const opacity = alpha * Math.abs(values[i]);
    const keep = 1 - opacity;
    for (let k = 4 * i; k < 4 * i + 3; k += 1) {
      out[k] = rint(((base[k] / 255) * keep + (heat[k] / 255) * opacity) * 255); // numpy's order of operations
    }
    out[4 * i + 3] = 255;
  }
  return out;
}

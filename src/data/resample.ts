// Image resizing as PIL's Image.resize(..., BILINEAR) does it (what
// torchvision's Resize applies to PIL images): a separable triangle filter
// whose support widens with the downscale factor, so shrinking averages
// every source pixel (antialiased, area-like) and enlarging interpolates
// bilinearly. Works on float planes; no rounding to 8 bits in between.

/** For each output index, the first source index and the normalized weights. */
interface Coefficients {
  start: Int32Array;
  weights: Float64Array[];
}

/** PIL's precompute_coeffs for the bilinear (triangle, support 1) filter. */
function coefficients(inSize: number, outSize: number): Coefficients {
  const scale = inSize / outSize;
  const filterScale = Math.max(scale, 1);
  const support = 1 * filterScale;
  const start = new Int32Array(outSize);
  const weights: Float64Array[] = [];
  for (let o = 0; o < outSize; o++) {
    const center = (o + 0.5) * scale;
    const lo = Math.max(Math.trunc(center - support + 0.5), 0);
    const hi = Math.min(Math.trunc(center + support + 0.5), inSize);
    const w = new Float64Array(Math.max(hi - lo, 0));
    let sum = 0;
    for (let i = 0; i < w.length; i++) {
      const x = (i + lo - center + 0.5) / filterScale;
      w[i] = Math.max(0, 1 - Math.abs(x));
      sum += w[i];
    }
    if (sum > 0) for (let i = 0; i < w.length; i++) w[i] /= sum;
    start[o] = lo;
    weights.push(w);
  }
  return { start, weights };
}

/**
 * Resizes `channels` planes of inH x inW (CHW) to outH x outW.
 * Returns a new CHW Float32Array.
 */
export function resizeBilinear(
  src: Float32Array,
  channels: number,
  inH: number,
  inW: number,
  outH: number,
  outW: number,
): Float32Array {
  if (inH === outH && inW === outW) return src.slice();
  const horizontal = coefficients(inW, outW);
  const vertical = coefficients(inH, outH);
  // Horizontal pass: C x inH x outW
  const mid = new Float32Array(channels * inH * outW);
  for (let c = 0; c < channels; c++) {
    for (let y = 0; y < inH; y++) {
      const row = (c * inH + y) * inW;
      const outRow = (c * inH + y) * outW;
      for (let x = 0; x < outW; x++) {
        const w = horizontal.weights[x];
        const s = horizontal.start[x];
        let acc = 0;
        for (let i = 0; i < w.length; i++) acc += w[i] * src[row + s + i];
        mid[outRow + x] = acc;
      }
    }
  }
  // Vertical pass: C x outH x outW
  const out = new Float32Array(channels * outH * outW);
  for (let c = 0; c < channels; c++) {
    for (let y = 0; y < outH; y++) {
      const w = vertical.weights[y];
      const s = vertical.start[y];
      const outRow = (c * outH + y) * outW;
      for (let x = 0; x < outW; x++) {
        let acc = 0;
        for (let i = 0; i < w.length; i++) acc += w[i] * mid[(c * inH + s + i) * outW + x];
        out[outRow + x] = acc;
      }
    }
  }
  return out;
}

/**
 * The size to resize to before a center crop to outH x outW, as
 * torchvision's Resize(size) + CenterCrop(size): the image is scaled to
 * cover the crop, the covering side exactly, the other truncated (never
 * below the crop).
 */
export function coverSize(inH: number, inW: number, outH: number, outW: number): [number, number] {
  if (outH / inH >= outW / inW) return [outH, Math.max(outW, Math.trunc((inW * outH) / inH))];
  return [Math.max(outH, Math.trunc((inH * outW) / inW)), outW];
}

/** Center crop of CHW planes (torchvision: top = round((h - th) / 2)). */
export function centerCrop(src: Float32Array, channels: number, inH: number, inW: number, outH: number, outW: number): Float32Array {
  if (inH === outH && inW === outW) return src;
  const top = Math.round((inH - outH) / 2);
  const left = Math.round((inW - outW) / 2);
  const out = new Float32Array(channels * outH * outW);
  for (let c = 0; c < channels; c++)
    for (let y = 0; y < outH; y++) {
      const from = (c * inH + top + y) * inW + left;
      out.set(src.subarray(from, from + outW), (c * outH + y) * outW);
    }
  return out;
}

/** Mirrors CHW planes left-right in place. */
export function flipHorizontal(data: Float32Array, channels: number, height: number, width: number): void {
  for (let row = 0; row < channels * height; row++) {
    const base = row * width;
    for (let x = 0, y = width - 1; x < y; x++, y--) {
      const tmp = data[base + x];
      data[base + x] = data[base + y];
      data[base + y] = tmp;
    }
  }
}

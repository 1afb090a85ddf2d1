// Model-space samples to pixels and PNG grids. PNG encoding goes through
// pngjs; the conversion follows diffusers' pipelines:
// (x / 2 + 0.5).clamp(0, 1), then * 255, rounded.
import pngjs from 'pngjs';

import { InputError } from '../errors.js';

const { PNG } = pngjs;

export interface ImageData8 {
  width: number;
  height: number;
  /** 1 (gray) or 4 (RGBA) bytes per pixel */
  channels: 1 | 4;
  data: Uint8Array;
}

function toByte(v: number): number {
  const x = Math.min(1, Math.max(0, v / 2 + 0.5));
  return Math.round(x * 255);
}

/** Splits [B, C, H, W] samples (C = 1 or 3) into 8-bit images: gray for 1 channel, RGBA for 3. */
export function samplesToImages(samples: Float32Array, shape: readonly number[]): ImageData8[] {
  const [batch, channels, height, width] = shape as [number, number, number, number];
  if (shape.length !== 4 || samples.length !== batch * channels * height * width)
    throw new InputError(`samples do not match shape ${JSON.stringify(shape)}`);
  if (channels !== 1 && channels !== 3) throw new InputError(`images need 1 or 3 channels, got ${channels}`);
  const plane = height * width;
  const images: ImageData8[] = [];
  for (let b = 0; b < batch; b++) {
    const base = b * channels * plane;
    if (channels === 1) {
      const data = new Uint8Array(plane);
      for (let p = 0; p < plane; p++) data[p] = toByte(samples[base + p]!);
      images.push({ width, height, channels: 1, data });
    } else {
      const data = new Uint8Array(plane * 4);
      for (let p = 0; p < plane; p++) {
        data[p * 4] = toByte(samples[base + p]!);
        data[p * 4 + 1] = toByte(samples[base + plane + p]!);
        data[p * 4 + 2] = toByte(samples[base + 2 * plane + p]!);
        data[p * 4 + 3] = 255;
      }
      images.push({ width, height, channels: 4, data });
    }
  }
  return images;
}

/** Lays images out in a grid (columns default to ceil(sqrt(n))) with a 2-pixel gap, as one RGBA PNG. */
export function imagesToGridPng(images: ImageData8[], options: { columns?: number; gap?: number } = {}): Uint8Array {
  if (images.length === 0) throw new InputError('no images to write');
  const { width, height } = images[0]!;
  const columns = Math.max(1, Math.min(images.length, options.columns ?? Math.ceil(Math.sqrt(images.length))));
  const rows = Math.ceil(images.length / columns);
  const gap = options.gap ?? 2;
  const png = new PNG({ width: columns * width + (columns - 1) * gap, height: rows * height + (rows - 1) * gap });
  png.data.fill(0);
  images.forEach((image, index) => {
    const x0 = (index % columns) * (width + gap);
    const y0 = Math.floor(index / columns) * (height + gap);
    for (let y = 0; y < height; y++)
      for (let x = 0; x < width; x++) {
        const dst = ((y0 + y) * png.width + (x0 + x)) * 4;
        const p = y * width + x;
        if (image.channels === 1) {
          const v = image.data[p]!;
          png.data[dst] = png.data[dst + 1] = png.data[dst + 2] = v;
        } else {
          png.data[dst] = image.data[p * 4]!;
          png.data[dst + 1] = image.data[p * 4 + 1]!;
          png.data[dst + 2] = image.data[p * 4 + 2]!;
        }
        png.data[dst + 3] = 255;
      }
  });
  return new Uint8Array(PNG.sync.write(png));
}

/** Decodes a PNG to RGBA bytes (for tests and datasets). */
export function decodePng(bytes: Uint8Array): { width: number; height: number; data: Uint8Array } {
  const png = PNG.sync.read(Buffer.from(bytes));
  return { width: png.width, height: png.height, data: new Uint8Array(png.data) };
}

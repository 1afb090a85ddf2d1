// Model-space samples to pixels and PNG grids. The conversion follows
// diffusers' pipelines: (x / 2 + 0.5).clamp(0, 1), then * 255, rounded. PNG
// encoding goes through fast-png (pure JS, deflate by fflate), so the same
// samples give the same PNG bytes in every runtime.
import { decode, encode } from 'fast-png';

import { InputError } from '../errors.js';

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

/** Images as RGBA, the layout of a canvas's ImageData (`new ImageData(image.data, image.width)`). */
export interface RgbaImage {
  width: number;
  height: number;
  data: Uint8ClampedArray;
}

export function imagesToRgba(images: ImageData8[]): RgbaImage[] {
  return images.map(({ width, height, channels, data }) => {
    const rgba = new Uint8ClampedArray(width * height * 4);
    for (let p = 0; p < width * height; p++) {
      if (channels === 1) rgba[p * 4] = rgba[p * 4 + 1] = rgba[p * 4 + 2] = data[p]!;
      else rgba.set(data.subarray(p * 4, p * 4 + 3), p * 4);
      rgba[p * 4 + 3] = 255;
    }
    return { width, height, data: rgba };
  });
}

/** Lays images out in a grid (columns default to ceil(sqrt(n))) with a 2-pixel gap, as one RGBA PNG. */
export function imagesToGridPng(images: ImageData8[], options: { columns?: number; gap?: number } = {}): Uint8Array {
  if (images.length === 0) throw new InputError('no images to write');
  const { width, height } = images[0]!;
  const columns = Math.max(1, Math.min(images.length, options.columns ?? Math.ceil(Math.sqrt(images.length))));
  const rows = Math.ceil(images.length / columns);
  const gap = options.gap ?? 2;
  const gridWidth = columns * width + (columns - 1) * gap;
  const gridHeight = rows * height + (rows - 1) * gap;
  const grid = new Uint8Array(gridWidth * gridHeight * 4);
  imagesToRgba(images).forEach((image, index) => {
    const x0 = (index % columns) * (width + gap);
    const y0 = Math.floor(index / columns) * (height + gap);
    for (let y = 0; y < height; y++)
      grid.set(image.data.subarray(y * width * 4, (y + 1) * width * 4), ((y0 + y) * gridWidth + x0) * 4);
  });
  // The gaps are black and opaque.
  for (let i = 3; i < grid.length; i += 4) grid[i] = 255;
  return encode({ width: gridWidth, height: gridHeight, data: grid, channels: 4, depth: 8 });
}

/** Decodes an 8-bit PNG to RGBA bytes (for tests and datasets). */
export function decodePng(bytes: Uint8Array): { width: number; height: number; data: Uint8Array } {
  const image = decode(bytes);
  if (image.depth !== 8) throw new InputError(`PNG depth ${image.depth} is not supported (8-bit only)`);
  const { width, height, channels } = image;
  const pixels = image.data as Uint8Array;
  if (channels === 4) return { width, height, data: new Uint8Array(pixels) };
  const data = new Uint8Array(width * height * 4);
  for (let p = 0; p < width * height; p++) {
    const gray = channels < 3;
    data[p * 4] = pixels[p * channels]!;
    data[p * 4 + 1] = pixels[p * channels + (gray ? 0 : 1)]!;
    data[p * 4 + 2] = pixels[p * channels + (gray ? 0 : 2)]!;
    data[p * 4 + 3] = channels === 2 || channels === 4 ? pixels[p * channels + channels - 1]! : 255;
  }
  return { width, height, data };
}

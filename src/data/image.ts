// Decoding image files into model-space tensors: PNG (pngjs) and JPEG
// (jpeg-js), converted to RGB or grayscale, resized to cover the model's
// sample size and center cropped (torchvision's Resize + CenterCrop with
// PIL's bilinear filter), scaled from [0, 255] to [-1, 1] as
// Normalize([0.5], [0.5]) after ToTensor does.
import jpeg from 'jpeg-js';
import pngjs from 'pngjs';

import { InputError } from '../core/errors.js';
import { centerCrop, coverSize, resizeBilinear } from './resample.js';

const { PNG } = pngjs;

/** 8-bit RGBA pixels, row-major. */
export interface Rgba8 {
  width: number;
  height: number;
  data: Uint8Array;
}

const PNG_MAGIC = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];

export function isPng(bytes: Uint8Array): boolean {
  return PNG_MAGIC.every((b, i) => bytes[i] === b);
}

export function isJpeg(bytes: Uint8Array): boolean {
  return bytes[0] === 0xff && bytes[1] === 0xd8 && bytes[2] === 0xff;
}

/** Decodes a PNG or JPEG (by its magic bytes, not its name) to RGBA. */
export function decodeImage(bytes: Uint8Array, what = 'image'): Rgba8 {
  try {
    if (isPng(bytes)) {
      const png = PNG.sync.read(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength));
      return { width: png.width, height: png.height, data: new Uint8Array(png.data.buffer, png.data.byteOffset, png.data.byteLength) };
    }
    if (isJpeg(bytes)) {
      // Limits keep a hostile file from allocating gigabytes.
      const img = jpeg.decode(bytes, { useTArray: true, formatAsRGBA: true, maxResolutionInMP: 100, maxMemoryUsageInMB: 1024 });
      return { width: img.width, height: img.height, data: img.data };
    }
  } catch (e) {
    throw new InputError(`${what}: cannot decode (${(e as Error).message})`);
  }
  throw new InputError(`${what}: not a PNG or JPEG file`);
}

/**
 * RGBA to CHW float planes of 1 (luma, ITU-R 601-2 as PIL's convert('L'))
 * or 3 (RGB) channels, values still in [0, 255]. Alpha is dropped, as PIL's
 * convert('RGB') drops it.
 */
export function toPlanes(image: Rgba8, channels: 1 | 3): Float32Array {
  const { width, height, data } = image;
  const plane = width * height;
  const out = new Float32Array(channels * plane);
  for (let p = 0; p < plane; p++) {
    const r = data[4 * p], g = data[4 * p + 1], b = data[4 * p + 2];
    if (channels === 1) out[p] = (r * 299 + g * 587 + b * 114) / 1000;
    else {
      out[p] = r;
      out[plane + p] = g;
      out[2 * plane + p] = b;
    }
  }
  return out;
}

/**
 * A decoded image as the model's input: `channels` x height x width in
 * [-1, 1], resized to cover the size and center cropped.
 */
export function preprocessImage(image: Rgba8, channels: 1 | 3, height: number, width: number): Float32Array {
  const planes = toPlanes(image, channels);
  const [coverH, coverW] = coverSize(image.height, image.width, height, width);
  const resized = resizeBilinear(planes, channels, image.height, image.width, coverH, coverW);
  const cropped = centerCrop(resized, channels, coverH, coverW, height, width);
  for (let i = 0; i < cropped.length; i++) cropped[i] = Math.min(255, Math.max(0, cropped[i])) / 127.5 - 1;
  return cropped;
}

// A folder of PNG and JPEG images (searched recursively, in sorted path
// order), unlabeled. Files are decoded when an item is asked for, so a large
// folder costs no memory up front.
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';

import { InputError } from '../core/errors.js';
import type { Dataset, DatasetItem } from './dataset.js';
import { decodeImage, preprocessImage } from './image.js';

const EXTENSIONS = new Set(['.png', '.jpg', '.jpeg']);

export interface ImageFolderOptions {
  /** The model's in_channels: 1 (grayscale) or 3 (RGB). */
  channels: 1 | 3;
  /** The model's sample size: a side, or [height, width]. */
  size: number | [number, number];
}

async function listImages(dir: string): Promise<string[]> {
  const found: string[] = [];
  const walk = async (d: string) => {
    const entries = await readdir(d, { withFileTypes: true });
    for (const entry of entries) {
      const p = path.join(d, entry.name);
      if (entry.isDirectory()) await walk(p);
      else if (entry.isFile() && EXTENSIONS.has(path.extname(entry.name).toLowerCase())) found.push(p);
    }
  };
  await walk(dir);
  return found.sort();
}

export class ImageFolderDataset implements Dataset {
  readonly files: readonly string[];
  readonly shape: readonly [number, number, number];
  readonly numClasses = null;

  private constructor(files: string[], shape: [number, number, number]) {
    this.files = files;
    this.shape = shape;
  }

  get length(): number {
    return this.files.length;
  }

  static async open(dir: string, options: ImageFolderOptions): Promise<ImageFolderDataset> {
    const { channels, size } = options;
    if (channels !== 1 && channels !== 3)
      throw new InputError(`an image folder feeds models with 1 or 3 input channels, not ${String(channels)}`);
    const [height, width] = typeof size === 'number' ? [size, size] : size;
    if (![height, width].every((d) => Number.isInteger(d) && d >= 1))
      throw new InputError(`image size must be a positive integer or [height, width], got ${JSON.stringify(size)}`);
    let files: string[];
    try {
      files = await listImages(dir);
    } catch (e) {
      throw new InputError(`cannot read the image folder ${dir}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
    if (files.length === 0) throw new InputError(`${dir} holds no .png, .jpg or .jpeg files`);
    return new ImageFolderDataset(files, [channels, height, width]);
  }

  async item(index: number): Promise<DatasetItem> {
    if (!Number.isInteger(index) || index < 0 || index >= this.length)
      throw new InputError(`image index ${index} is not an integer in [0, ${this.length})`);
    const file = this.files[index];
    let bytes: Uint8Array;
    try {
      bytes = await readFile(file);
    } catch (e) {
      throw new InputError(`cannot read ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
    const [channels, height, width] = this.shape;
    return { pixels: preprocessImage(decodeImage(bytes, file), channels as 1 | 3, height, width), label: null };
  }
}

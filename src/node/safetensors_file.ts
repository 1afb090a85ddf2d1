// safetensors files on disk (Node): the format itself is runtime-neutral
// (src/core/model/safetensors.ts); this adds reading and atomic writing.
import { randomBytes } from 'node:crypto';
import { readFile, rename, unlink, writeFile } from 'node:fs/promises';

import { SafetensorsError } from '../core/errors.js';
import { parseSafetensors, serializeSafetensors } from '../core/model/safetensors.js';
import type { SafetensorsFile, TensorToWrite } from '../core/model/safetensors.js';

export async function readSafetensorsFile(path: string): Promise<SafetensorsFile> {
  let bytes: Uint8Array;
  try {
    bytes = await readFile(path);
  } catch (err) {
    const { code, message } = err as NodeJS.ErrnoException;
    throw new SafetensorsError(`cannot read safetensors file ${path}: ${code ?? message}`);
  }
  return parseSafetensors(bytes, path);
}

/** Writes to a temporary file first so readers never see a partial file. */
export async function writeSafetensorsFile(path: string, tensors: Record<string, TensorToWrite>, metadata?: Record<string, string>): Promise<void> {
  const bytes = serializeSafetensors(tensors, metadata);
  const temporaryPath = `${path}.tmp-${process.pid}-${randomBytes(6).toString('hex')}`;
  try {
    await writeFile(temporaryPath, bytes);
    await rename(temporaryPath, path);
  } catch (err) {
    await unlink(temporaryPath).catch(() => {});
    const { code, message } = err as NodeJS.ErrnoException;
    throw new SafetensorsError(`cannot write safetensors file ${path}: ${code ?? message}`);
  }
}

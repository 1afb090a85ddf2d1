// `marble export`: turns a checkpoint (or any model folder) into a release
// model folder: a diffusers DDPMPipeline folder with only what inference
// needs, the UNet weights rewritten in f16 (half the bytes; this is how the
// embedded models/mnist is made) or f32.
//
// OUT/model_index.json                          copied (a DDPMPipeline index when absent)
// OUT/scheduler/scheduler_config.json            copied (DDPM defaults when absent)
// OUT/unet/config.json                           copied unchanged
// OUT/unet/diffusion_pytorch_model.safetensors   every tensor converted to --dtype
//
// trainer_state/ (optimizer moments, the raw weights next to the EMA) is
// left behind. The folder is built under a temporary name, loaded once as a
// check, and only then swapped in, so OUT is never half-written.
//
// `--onnx FILE` writes the UNet as one ONNX file instead (or as well):
// opset 17, f32 weights named as in diffusers (src/onnx/), inputs sample,
// timestep (and class_labels), output out_sample. Written beside FILE and
// renamed over it, so FILE is never half-written either.
import { randomBytes } from 'node:crypto';
import { copyFile, mkdir, readFile, readdir, rename, rm, stat, unlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { Command, Option } from 'commander';

import { ConfigError, InputError } from '../core/errors.js';
import { parseUNet2DConfig } from '../core/model/config.js';
import { tensorToFloat32 } from '../core/model/safetensors.js';
import { readSafetensorsFile, writeSafetensorsFile } from '../node/safetensors_file.js';
import type { TensorToWrite } from '../core/model/safetensors.js';
import { loadUNet} from '../core/model/unet.js';
import { resolveModelDir } from '../node/model_dir.js';
import { unetToOnnx } from '../onnx/export.js';
import type { OnnxExportInfo } from '../onnx/export.js';
import { DDPMScheduler } from '../core/schedulers/ddpm.js';
import { commitDirectory, exists, temporaryName } from '../train/atomic_fs.js';
import { ddpmPipelineIndex, schedulerToDiffusersConfig } from '../train/diffusers_config.js';

const WEIGHTS = 'diffusion_pytorch_model.safetensors';
/** The largest finite float16. */
const F16_MAX = 65504;

export type ExportDtype = 'f16' | 'f32';

export interface ExportOptions {
  /** A pipeline folder (unet/ inside), a bare UNet2DModel folder, or a `marble train` run folder (its checkpoint/). */
  checkpoint: string;
  out: string;
  dtype?: ExportDtype;
  /** Replace OUT when it already holds a model folder. */
  force?: boolean;
}

export interface ExportResult {
  out: string;
  tensors: number;
  parameters: number;
  /** Size of the written weights file. */
  weightBytes: number;
  /** Largest |converted - original| over all weights (0 for f32 from f32). */
  maxRoundingError: number;
}

async function readJson(file: string): Promise<unknown | null> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw new ConfigError(`${file}: ${(e as Error).message}`);
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new ConfigError(`${file}: ${(e as Error).message}`);
  }
}

/** Where the UNet folder is, and the pipeline root around it (null for a bare model folder). */
async function locate(checkpoint: string): Promise<{ unetDir: string; root: string | null }> {
  let dir = checkpoint;
  // A run folder from `marble train`: its pipeline is checkpoint/.
  if (!(await exists(path.join(dir, 'config.json'))) && (await exists(path.join(dir, 'checkpoint', 'unet', 'config.json'))))
    dir = path.join(dir, 'checkpoint');
  const unetDir = await resolveModelDir(dir);
  return { unetDir, root: unetDir === dir ? null : dir };
}

/** OUT may be replaced only when it is absent, empty, or (with force) a model folder. */
async function checkOut(out: string, checkpoint: string, force: boolean): Promise<void> {
  if (path.resolve(out) === path.resolve(checkpoint)) throw new InputError('--out must differ from --checkpoint');
  let names: string[];
  try {
    if (!(await stat(out)).isDirectory()) throw new InputError(`--out ${out} is a file`);
    names = await readdir(out);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw e;
  }
  if (names.length === 0) return;
  const isModel = names.includes('model_index.json') || names.includes('unet');
  if (!force) throw new InputError(`--out ${out} already exists${isModel ? '' : ' and is not a model folder'}; pass --force to replace it`);
  if (!isModel) throw new InputError(`refusing to replace ${out}: it is not a model folder (no model_index.json or unet/), and exporting replaces the whole folder`);
}

/** Writes the export; see the header comment for the layout. */
export async function exportModel(options: ExportOptions): Promise<ExportResult> {
  const dtype = options.dtype ?? 'f16';
  if (dtype !== 'f16' && dtype !== 'f32') throw new InputError(`--dtype must be f16 or f32, got ${String(dtype)}`);
  const out = path.resolve(options.out);
  const { unetDir, root } = await locate(options.checkpoint);
  await checkOut(out, root ?? unetDir, options.force === true);

  const configPath = path.join(unetDir, 'config.json');
  parseUNet2DConfig(await readJson(configPath)); // refuse a config marble cannot run before writing anything
  const weights = await readSafetensorsFile(path.join(unetDir, WEIGHTS));
  const tensors: Record<string, TensorToWrite> = {};
  let parameters = 0;
  let maxRoundingError = 0;
  for (const [name, info] of weights.tensors) {
    if (!['F32', 'F16', 'BF16'].includes(info.dtype)) throw new InputError(`${name}: dtype ${info.dtype} is not a float weight`);
    const data = tensorToFloat32(weights, name);
    for (let i = 0; i < data.length; i++) {
      const v = data[i];
      if (!Number.isFinite(v)) throw new InputError(`${name} holds ${v}; refusing to export a broken checkpoint`);
      // f16 tops out at 65504: a larger weight would become infinity, silently.
      if (dtype === 'f16' && Math.abs(v) > F16_MAX) throw new InputError(`${name} holds ${v}, beyond float16's range (±${F16_MAX}); export with --dtype f32`);
    }
    tensors[name] = { dtype: dtype === 'f16' ? 'F16' : 'F32', shape: info.shape, data };
    parameters += data.length;
  }

  const staged = temporaryName(out);
  try {
    await mkdir(path.join(staged, 'unet'), { recursive: true });
    await mkdir(path.join(staged, 'scheduler'));
    await copyFile(configPath, path.join(staged, 'unet', 'config.json'));
    const weightsOut = path.join(staged, 'unet', WEIGHTS);
    await writeSafetensorsFile(weightsOut, tensors, { ...weights.metadata, format: weights.metadata.format ?? 'pt' });
    const schedulerFile = root ? path.join(root, 'scheduler', 'scheduler_config.json') : null;
    if (schedulerFile && (await exists(schedulerFile))) {
      await readJson(schedulerFile); // it must at least parse
      await copyFile(schedulerFile, path.join(staged, 'scheduler', 'scheduler_config.json'));
    } else {
      await writeFile(path.join(staged, 'scheduler', 'scheduler_config.json'), `${JSON.stringify(schedulerToDiffusersConfig(new DDPMScheduler()), null, 2)}\n`);
    }
    const indexFile = root ? path.join(root, 'model_index.json') : null;
    if (indexFile && (await exists(indexFile))) await copyFile(indexFile, path.join(staged, 'model_index.json'));
    else await writeFile(path.join(staged, 'model_index.json'), `${JSON.stringify(ddpmPipelineIndex(), null, 2)}\n`);

    // What was written must load: the weights match the config's parameter table.
    const check = await loadUNet(staged);
    check.dispose();

    // How far the conversion moved the weights (reading back what the engine will read).
    const written = await readSafetensorsFile(weightsOut);
    for (const [name, tensor] of Object.entries(tensors)) {
      const back = tensorToFloat32(written, name);
      const original = tensor.data as Float32Array;
      for (let i = 0; i < back.length; i++) maxRoundingError = Math.max(maxRoundingError, Math.abs(back[i] - original[i]));
    }
    const weightBytes = (await stat(weightsOut)).size;
    await commitDirectory(staged, out);
    return { out, tensors: weights.tensors.size, parameters, weightBytes, maxRoundingError };
  } catch (e) {
    await rm(staged, { recursive: true, force: true }).catch(() => {});
    throw e;
  }
}

export interface OnnxExportOptions {
  /** As for exportModel: a pipeline, run or UNet2DModel folder. */
  checkpoint: string;
  /** The .onnx file to write. */
  file: string;
  /** Replace the file when it exists. */
  force?: boolean;
}

export interface OnnxExportResult extends OnnxExportInfo {
  file: string;
  bytes: number;
}

/** Writes the checkpoint's UNet as an ONNX file (see the header comment). */
export async function exportOnnxFile(options: OnnxExportOptions): Promise<OnnxExportResult> {
  const file = path.resolve(options.file);
  try {
    const existing = await stat(file);
    if (existing.isDirectory()) throw new InputError(`--onnx ${options.file} is a folder; give a file name such as unet.onnx`);
    if (!options.force) throw new InputError(`--onnx ${options.file} already exists; pass --force to replace it`);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
  }
  const folder = path.dirname(file);
  if (!(await stat(folder).then((st) => st.isDirectory(), () => false)))
    throw new InputError(`--onnx ${options.file}: the folder ${folder} does not exist`);
  const { unetDir } = await locate(options.checkpoint);
  const unet = await loadUNet(unetDir);
  let bytes: Uint8Array;
  const info: OnnxExportInfo = { parameters: 0, initializers: 0, nodes: 0 };
  try {
    bytes = unetToOnnx(unet, info);
  } finally {
    unet.dispose();
  }
  const temporary = `${file}.tmp-${process.pid}-${randomBytes(6).toString('hex')}`;
  try {
    await writeFile(temporary, bytes);
    await rename(temporary, file);
  } catch (e) {
    await unlink(temporary).catch(() => {});
    throw e;
  }
  return { file, bytes: bytes.byteLength, ...info };
}

interface ExportFlags {
  checkpoint: string;
  out?: string;
  onnx?: string;
  dtype: ExportDtype;
  force?: boolean;
}

function shownPath(p: string): string {
  const relative = path.relative(process.cwd(), p);
  return relative && !relative.startsWith('..') ? relative : p;
}

/** Adds `marble export` to the program. */
export function registerExportCommand(program: Command): void {
  program
    .command('export')
    .description('write a checkpoint as a release model folder (diffusers DDPMPipeline layout, f16 weights by default) and/or an ONNX file')
    .requiredOption('--checkpoint <dir>', 'a pipeline folder (e.g. runs/x/checkpoint), a run folder, or a UNet2DModel folder')
    .option('--out <dir>', 'the model folder to write (replaced as a whole)')
    .option('--onnx <file>', 'write the UNet as an ONNX model (opset 17, f32 weights) to this file')
    .addOption(new Option('--dtype <type>', 'weight precision of --out').choices(['f16', 'f32']).default('f16'))
    .option('--force', 'replace --out when it already holds a model folder, and --onnx when the file exists')
    .action(async (flags: ExportFlags) => {
      if (flags.out === undefined && flags.onnx === undefined) throw new InputError('give --out <dir>, --onnx <file>, or both');
      if (flags.out !== undefined) {
        const r = await exportModel({ checkpoint: flags.checkpoint, out: flags.out, dtype: flags.dtype, force: flags.force });
        console.log(
          `exported ${flags.checkpoint} -> ${shownPath(r.out)}: ${r.parameters.toLocaleString('en-US')} parameters in ${r.tensors} tensors, ` +
            `${flags.dtype}, weights ${(r.weightBytes / 1e6).toFixed(2)} MB, largest rounding error ${r.maxRoundingError.toExponential(2)}`,
        );
      }
      if (flags.onnx !== undefined) {
        const r = await exportOnnxFile({ checkpoint: flags.checkpoint, file: flags.onnx, force: flags.force });
        console.log(
          `exported ${flags.checkpoint} -> ${shownPath(r.file)}: ONNX opset 17, ${r.parameters.toLocaleString('en-US')} parameters (f32), ` +
            `${r.nodes} nodes, ${(r.bytes / 1e6).toFixed(2)} MB`,
        );
      }
    });
}

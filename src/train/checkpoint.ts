// The checkpoint folder: a diffusers DDPMPipeline folder that diffusers and
// marble load as is, plus what resuming needs.
//
//   model_index.json
//   unet/config.json
//   unet/diffusion_pytorch_model.safetensors   the EMA weights when EMA is on, else the weights
//   scheduler/scheduler_config.json
//   trainer_state/state.json                  settings, step, generator state, loss history
//   trainer_state/unet.safetensors            the trained (non-EMA) weights
//   trainer_state/exp_avg.safetensors         AdamW first moments
//   trainer_state/exp_avg_sq.safetensors      AdamW second moments
//   trainer_state/ema.safetensors             the EMA weights (when EMA is on)
//
// All tensors are F32 in torch layout under the UNet's parameter names. The
// folder is built under a temporary name and swapped in whole
// (atomic_fs.commitDirectory), so a save killed at any point leaves the
// previous checkpoint loadable.
import { mkdir, readdir, readFile, rm, stat } from 'node:fs/promises';
import path from 'node:path';

import { MarbleError } from '../core/errors.js';
import type { ParamInfo } from '../core/backend/backend.js';
import { tensorToFloat32 } from '../core/model/safetensors.js';
import { readSafetensorsFile, writeSafetensorsFile } from '../node/safetensors_file.js';
import type { SafetensorsFile, TensorToWrite } from '../core/model/safetensors.js';
import {
  commitDirectory,
  exists,
  removeStaleTemporaries,
  resolveCommitted,
  temporaryName,
  writeJsonAtomic,
} from './atomic_fs.js';
import { CheckpointError } from './errors.js';
import type { TrainerProgress, TrainerSettings } from './trainer.js';

type Json = Record<string, unknown>;

export const STATE_FORMAT = 'marble-trainer-state';
export const STATE_VERSION = 1;

/** The tensor kinds a checkpoint stores, and their files under trainer_state/. */
export const STATE_TENSOR_FILES = {
  param: 'unet.safetensors',
  exp_avg: 'exp_avg.safetensors',
  exp_avg_sq: 'exp_avg_sq.safetensors',
  ema: 'ema.safetensors',
} as const;
export type StateTensorKind = keyof typeof STATE_TENSOR_FILES;

/** trainer_state/state.json */
export interface TrainerStateJson {
  format: typeof STATE_FORMAT;
  version: typeof STATE_VERSION;
  settings: TrainerSettings;
  progress: TrainerProgress;
  /** Whatever the caller passed to save() (JSON), e.g. a data loader's position. */
  userState: unknown;
}

export interface CheckpointContents {
  unetConfig: Json;
  schedulerConfig: Json;
  modelIndex: Json;
  params: readonly ParamInfo[];
  tensors: Record<'param' | 'exp_avg' | 'exp_avg_sq', Float32Array[]> & { ema: Float32Array[] | null };
  state: TrainerStateJson;
}

export interface SaveOptions {
  /** Called after each file is written (path relative to the checkpoint); throwing aborts the save. */
  onFile?: (relativePath: string) => void | Promise<void>;
}

function describeError(e: unknown): string {
  if (e instanceof MarbleError) return e.message;
  const { code, message } = e as NodeJS.ErrnoException;
  return code ? `${code} (${message})` : String(message ?? e);
}

function tensorRecord(params: readonly ParamInfo[], data: Float32Array[]): Record<string, TensorToWrite> {
  const out: Record<string, TensorToWrite> = {};
  params.forEach(({ name, shape }, i) => {
    out[name] = { dtype: 'F32', shape: [...shape], data: data[i]! };
  });
  return out;
}

/** Refuses to replace a folder that is not a checkpoint (it would be deleted). */
async function checkReplaceable(dir: string): Promise<void> {
  let info;
  try {
    info = await stat(dir);
  } catch {
    return; // absent: nothing to replace
  }
  if (!info.isDirectory()) throw new CheckpointError(`cannot save a checkpoint to ${dir}: it is a file`, dir);
  const names = await readdir(dir);
  if (names.length > 0 && !(await exists(path.join(dir, 'trainer_state', 'state.json'))))
    throw new CheckpointError(
      `refusing to save a checkpoint to ${dir}: the folder holds other files and is not a marble checkpoint (saving replaces the whole folder)`,
      dir,
    );
}

/** Writes a complete checkpoint folder at `dir`, replacing the previous one atomically. */
export async function writeCheckpoint(dir: string, contents: CheckpointContents, options: SaveOptions = {}): Promise<void> {
  const target = path.resolve(dir);
  await checkReplaceable(target);
  const staged = temporaryName(target);
  try {
    await mkdir(path.dirname(target), { recursive: true });
    await removeStaleTemporaries(target);
    await mkdir(staged);
    const write = async (relative: string, body: () => Promise<void>) => {
      const file = path.join(staged, relative);
      await mkdir(path.dirname(file), { recursive: true });
      await body();
      await options.onFile?.(relative);
    };
    const { params, tensors } = contents;
    const metadata = { format: 'pt' };
    const json = (relative: string, value: unknown) => write(relative, () => writeJsonAtomic(path.join(staged, relative), value));
    const weights = (relative: string, data: Float32Array[]) =>
      write(relative, () => writeSafetensorsFile(path.join(staged, relative), tensorRecord(params, data), metadata));

    await json('model_index.json', contents.modelIndex);
    await json(path.join('scheduler', 'scheduler_config.json'), contents.schedulerConfig);
    await json(path.join('unet', 'config.json'), contents.unetConfig);
    await weights(path.join('unet', 'diffusion_pytorch_model.safetensors'), tensors.ema ?? tensors.param);
    await weights(path.join('trainer_state', STATE_TENSOR_FILES.param), tensors.param);
    await weights(path.join('trainer_state', STATE_TENSOR_FILES.exp_avg), tensors.exp_avg);
    await weights(path.join('trainer_state', STATE_TENSOR_FILES.exp_avg_sq), tensors.exp_avg_sq);
    if (tensors.ema) await weights(path.join('trainer_state', STATE_TENSOR_FILES.ema), tensors.ema);
    // state.json last: a folder with it is a finished checkpoint.
    await json(path.join('trainer_state', 'state.json'), contents.state);
    await commitDirectory(staged, target);
  } catch (e) {
    await rm(staged, { recursive: true, force: true }).catch(() => {});
    if (e instanceof CheckpointError) throw e;
    throw new CheckpointError(`cannot save a checkpoint to ${target}: ${describeError(e)}`, target, { cause: e });
  }
}

// ---------------------------------------------------------------------------
// Reading

export interface LoadedCheckpoint {
  /** The folder read (dir, or dir.prev after an interrupted save). */
  dir: string;
  unetConfig: Json;
  schedulerConfig: Json;
  state: TrainerStateJson;
  /** Opens one tensor kind's file (ema: null when the checkpoint has no EMA). */
  tensors(kind: StateTensorKind, params: readonly ParamInfo[]): Promise<Float32Array[] | null>;
}

function isObject(v: unknown): v is Json {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

async function readJson(file: string): Promise<Json> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (e) {
    throw new CheckpointError(`cannot resume: ${file} is missing or unreadable (${describeError(e)})`, file, { cause: e });
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e) {
    throw new CheckpointError(`cannot resume: ${file} is not valid JSON (${(e as Error).message})`, file, { cause: e });
  }
  if (!isObject(value)) throw new CheckpointError(`cannot resume: ${file} is not a JSON object`, file);
  return value;
}

/** Structural checks of state.json; the values are checked again by the Trainer. */
function checkState(state: Json, file: string): TrainerStateJson {
  const fail = (what: string): never => {
    throw new CheckpointError(`cannot resume: ${file}: ${what}`, file);
  };
  if (state['format'] !== STATE_FORMAT) fail(`format is ${JSON.stringify(state['format'])}, expected "${STATE_FORMAT}"`);
  if (state['version'] !== STATE_VERSION) fail(`version ${JSON.stringify(state['version'])} is not supported (expected ${STATE_VERSION})`);
  const settings = state['settings'];
  if (!isObject(settings)) fail('settings is missing');
  const progress = state['progress'];
  if (!isObject(progress)) return fail('progress is missing');
  const count = (key: string) => {
    const v = progress[key];
    if (!Number.isSafeInteger(v) || (v as number) < 0) fail(`progress.${key} must be a non-negative integer, got ${JSON.stringify(v)}`);
    return v as number;
  };
  const globalStep = count('globalStep');
  count('microStep');
  const history = progress['lossHistory'];
  if (!Array.isArray(history) || !history.every((v) => typeof v === 'number' && Number.isFinite(v)))
    fail('progress.lossHistory must be an array of finite numbers');
  if ((history as number[]).length !== globalStep)
    fail(`progress.lossHistory has ${(history as number[]).length} entries for ${globalStep} steps`);
  if (!isObject(progress['generator'])) fail('progress.generator is missing');
  return state as unknown as TrainerStateJson;
}

/** Checks a tensor file against the parameter table and returns the tensors in table order. */
function matchTensors(file: SafetensorsFile, params: readonly ParamInfo[], where: string): Float32Array[] {
  const problems: string[] = [];
  const expected = new Set(params.map((p) => p.name));
  for (const { name, shape } of params) {
    const info = file.tensors.get(name);
    if (!info) problems.push(`missing ${name}`);
    else if (info.dtype !== 'F32') problems.push(`${name} is ${info.dtype}, expected F32`);
    else if (JSON.stringify(info.shape) !== JSON.stringify(shape))
      problems.push(`${name} has shape [${info.shape.join(', ')}], expected [${shape.join(', ')}]`);
  }
  for (const name of file.tensors.keys()) if (!expected.has(name)) problems.push(`unexpected ${name}`);
  if (problems.length > 0)
    throw new CheckpointError(
      `cannot resume: ${where} does not match the model's parameters (${problems.length} problem(s)): ${problems.slice(0, 10).join('; ')}${problems.length > 10 ? '; ...' : ''}`,
      where,
    );
  return params.map(({ name }) => tensorToFloat32(file, name));
}

/** Reads and checks a checkpoint folder's JSON; tensors are read on demand. */
export async function readCheckpoint(dir: string): Promise<LoadedCheckpoint> {
  const found = await resolveCommitted(path.resolve(dir));
  if (!found) throw new CheckpointError(`cannot resume: ${dir} does not exist`, dir);
  const statePath = path.join(found, 'trainer_state', 'state.json');
  if (!(await exists(statePath)))
    throw new CheckpointError(
      `cannot resume: ${found} is not a marble training checkpoint (no trainer_state/state.json)`,
      found,
    );
  const state = checkState(await readJson(statePath), statePath);
  const unetConfig = await readJson(path.join(found, 'unet', 'config.json'));
  const schedulerConfig = await readJson(path.join(found, 'scheduler', 'scheduler_config.json'));
  return {
    dir: found,
    unetConfig,
    schedulerConfig,
    state,
    tensors: async (kind, params) => {
      const file = path.join(found, 'trainer_state', STATE_TENSOR_FILES[kind]);
      if (kind === 'ema' && !state.settings.ema) return null;
      let parsed: SafetensorsFile;
      try {
        parsed = await readSafetensorsFile(file);
      } catch (e) {
        throw new CheckpointError(`cannot resume: ${describeError(e)}`, file, { cause: e });
      }
      return matchTensors(parsed, params, file);
    },
  };
}

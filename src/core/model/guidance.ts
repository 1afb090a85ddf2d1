// Classifier-free guidance (CFG): what a model trained for it records, and
// the guidance scale's validation.
//
// A class-conditional model trained with label dropout learns one extra
// class, the unconditional ("null") label: its class embedding table has
// num_class_embeds = classes + 1 rows and the null label is the last one.
// Sampling with a guidance scale s runs each sample with its label and with
// the null label in one doubled batch and steps with
// eps_u + s * (eps_c - eps_u) (native/engine/step_math.h, guided_output).
//
// Where it is recorded: in unet/config.json under the private key
// "_classifier_free_guidance" ({"null_class_label": n, "label_dropout": p}).
// The unet folder is what marble loads (a bare folder or a pipeline's unet/),
// so the record travels with the weights it describes; diffusers drops every
// config key that starts with "_" before building the model
// (ConfigMixin.extract_init_dict), without even the unexpected-key warning,
// so UNet2DModel.from_pretrained loads the folder unchanged (checked by
// tools/make_cfg_fixtures.py, which loads such a folder and runs it).
import { ConfigError, InputError } from '../errors.js';

/** The unet/config.json key of the record. */
export const kGuidanceConfigKey = '_classifier_free_guidance';

export interface GuidanceRecord {
  /** The class label of the unconditional pass (num_class_embeds - 1 for marble-trained models). */
  nullClassLabel: number;
  /** The probability with which training replaced a label by the null label. */
  labelDropout: number;
}

/** The record from config.json, or null when absent; numClassEmbeds is the model's table size. */
export function parseGuidanceRecord(json: Record<string, unknown>, numClassEmbeds: number | null): GuidanceRecord | null {
  const raw = json[kGuidanceConfigKey];
  if (raw === undefined || raw === null) return null;
  const where = `config.json: ${kGuidanceConfigKey}`;
  if (typeof raw !== 'object' || Array.isArray(raw)) throw new ConfigError(`${where} must be an object`);
  const r = raw as Record<string, unknown>;
  if (numClassEmbeds === null) throw new ConfigError(`${where} needs a class-conditional model (num_class_embeds)`);
  const label = r['null_class_label'];
  if (typeof label !== 'number' || !Number.isInteger(label) || label < 0 || label >= numClassEmbeds)
    throw new ConfigError(`${where}.null_class_label = ${JSON.stringify(label)} is not a class label in [0, ${numClassEmbeds})`);
  const dropout = r['label_dropout'] ?? 0;
  if (typeof dropout !== 'number' || !(dropout >= 0 && dropout < 1))
    throw new ConfigError(`${where}.label_dropout = ${JSON.stringify(dropout)} is not a probability in [0, 1)`);
  return { nullClassLabel: label, labelDropout: dropout };
}

/** The record as config.json writes it. */
export function guidanceRecordJson(record: GuidanceRecord): Record<string, unknown> {
  return { label_dropout: record.labelDropout, null_class_label: record.nullClassLabel };
}

/**
 * A guidance scale given by a caller: undefined is 1 (no guidance). Any
 * finite number >= 0 (0 samples the unconditional model, 1 the conditional
 * one; the usual range is 1.5 to 8).
 */
export function checkGuidanceScale(scale: unknown): number {
  if (scale === undefined) return 1;
  if (typeof scale !== 'number' || !Number.isFinite(scale) || scale < 0)
    throw new InputError(`guidanceScale must be a finite number >= 0 (1: no guidance), got ${String(scale)}`);
  return scale;
}

/**
 * The class labels of a guided forward: the samples' own labels, then the
 * null label once per sample ([cond; uncond], the order the step kernel reads).
 */
export function guidedLabels(labels: readonly number[], record: GuidanceRecord): number[] {
  return [...labels, ...labels.map(() => record.nullClassLabel)];
}

/** The model input of a guided forward: the batch twice over, in one array. */
export function guidedInput(x: Float32Array): Float32Array {
  const out = new Float32Array(2 * x.length);
  out.set(x);
  out.set(x, x.length);
  return out;
}

// What a job is: the request body's JSON schema, its normalised form (a
// JobSpec, JSON-serialisable so it can travel through Redis), the limits a
// request is held to, and the records and events a job produces.

export const MAX_SEED = (1n << 64n) - 1n;

/** DDIM, DDPM and the fast solvers (pipeline.scheduler's names). */
export const SCHEDULER_NAMES = ['ddim', 'ddpm', 'dpm++', 'unipc', 'euler', 'euler-a', 'heun'] as const;
export type SchedulerName = (typeof SCHEDULER_NAMES)[number];
export type JobState = 'queued' | 'running' | 'completed' | 'failed' | 'cancelled';

/** A request, normalised: every default resolved, one seed per image. */
export interface JobSpec {
  model: string;
  scheduler: SchedulerName;
  steps: number;
  /** 0 for DDPM */
  eta: number;
  generator: 'philox' | 'torch';
  /** decimal strings (seeds go up to 2^64 - 1), one per image: the request's seed + i */
  seeds: string[];
  /** one per image for class-conditional models, else null */
  classLabels: number[] | null;
  height: number;
  width: number;
  /** hand x0 previews to event listeners */
  preview: boolean;
  /** classifier-free guidance scale; absent (jobs queued before it existed) or 1: none */
  guidanceScale?: number;
}

/** Engine runs that may share a batch: equal keys. */
export function batchKey(spec: JobSpec): string {
  // One engine run has one guidance scale (its doubled batch and the step's combination).
  return [spec.model, spec.scheduler, spec.steps, spec.eta, spec.generator, spec.height, spec.width, spec.guidanceScale ?? 1].join('|');
}

export interface ImageResult {
  /** decimal: seeds go up to 2^64 - 1 */
  seed: string;
  classLabel: number | null;
  /** base64 PNG */
  png: string;
}

export interface BatchInfo {
  /** the engine run's id, shared by every job batched into it */
  id: string;
  /** images in the engine batch */
  images: number;
  /** jobs in the engine batch */
  jobs: number;
}

export interface JobResult {
  images: ImageResult[];
  /** base64 PNG: the job's images as one grid */
  grid: string;
  width: number;
  height: number;
  batch: BatchInfo;
  /** seconds the engine batch took */
  samplingSeconds: number;
  /** who ran it: "pid@host" of the process */
  worker: string;
}

export interface JobError {
  code: string;
  message: string;
}

/** What a job's listeners hear (and what /v1/jobs/:id/events sends). */
export type JobEvent =
  | { type: 'queued'; position: number }
  | { type: 'started'; batch: BatchInfo; worker: string }
  | { type: 'step'; step: number; total: number; preview?: string }
  | { type: 'completed'; result: JobResult }
  | { type: 'failed'; error: JobError }
  | { type: 'cancelled'; reason: string };

export interface JobView {
  id: string;
  model: string;
  state: JobState;
  /** 1-based place in its model's queue while queued (local mode) */
  position?: number;
  progress: { step: number; total: number };
  createdAt: string;
  batch?: BatchInfo;
  /** the process running (or that ran) it */
  worker?: string;
  result?: JobResult;
  error?: JobError;
}

/** Per-request limits. */
export interface Limits {
  /** images per request, and per engine batch */
  maxBatch: number;
  maxSteps: number;
  /** height x width of one image */
  maxPixels: number;
  /** height x width x batch of one request */
  maxTotalPixels: number;
}

export const DEFAULT_LIMITS: Limits = { maxBatch: 16, maxSteps: 1000, maxPixels: 256 * 256, maxTotalPixels: 16 * 64 * 64 };

/** The POST /v1/images body, as Fastify validates it (unknown fields and wrong types are 400s). */
export const imageRequestSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['scheduler', 'steps'],
  properties: {
    model: { type: 'string', minLength: 1, maxLength: 64, description: 'a model name the operator configured (GET /v1/models); default: the first' },
    scheduler: { type: 'string', enum: [...SCHEDULER_NAMES] },
    steps: { type: 'integer', minimum: 1, description: 'inference steps, at most the server\'s --max-steps' },
    eta: { type: 'number', minimum: 0, maximum: 1000, description: 'DDIM only: 0 deterministic, 1 DDPM-like' },
    seed: {
      anyOf: [
        { type: 'integer', minimum: 0, maximum: Number.MAX_SAFE_INTEGER },
        { type: 'string', pattern: '^[0-9]{1,20}$' },
      ],
      description: 'image i gets seed + i; below 2^64 (a decimal string beyond 2^53); default: random',
    },
    generator: { type: 'string', enum: ['philox', 'torch'] },
    batch: { type: 'integer', minimum: 1, description: 'images, at most the server\'s --max-batch' },
    classLabels: { type: 'array', items: { type: 'integer', minimum: 0 }, minItems: 1, maxItems: 4096, description: 'one per image (class-conditional models); default: cycle through the classes' },
    guidanceScale: { type: 'number', minimum: 0, maximum: 100, description: 'classifier-free guidance scale (models trained with label dropout; GET /v1/models: guidance); 1: none' },
    height: { type: 'integer', minimum: 1, maximum: 65536 },
    width: { type: 'integer', minimum: 1, maximum: 65536 },
    format: { type: 'string', enum: ['png', 'json'], description: 'png: the grid; json: base64 PNGs and the seed of each image' },
    async: { type: 'boolean', description: 'answer 202 { id } at once' },
    preview: { type: 'boolean', description: 'x0 previews in the job\'s events' },
  },
} as const;

export interface ImageRequest {
  model?: string;
  scheduler: SchedulerName;
  steps: number;
  eta?: number;
  seed?: number | string;
  generator?: 'philox' | 'torch';
  batch?: number;
  classLabels?: number[];
  guidanceScale?: number;
  height?: number;
  width?: number;
  format?: 'png' | 'json';
  async?: boolean;
  preview?: boolean;
}

/** An HTTP answer other than 2xx, with the field at fault when there is one. */
export class HttpError extends Error {
  readonly statusCode: number;
  readonly code: string;
  readonly field?: string;
  readonly headers?: Record<string, string>;
  constructor(statusCode: number, code: string, message: string, field?: string, headers?: Record<string, string>) {
    super(message);
    this.name = 'HttpError';
    this.statusCode = statusCode;
    this.code = code;
    this.field = field;
    this.headers = headers;
  }
}

/** What the service knows of a model, enough to validate a request without loading it. */
export interface ModelSummary {
  name: string;
  /** pixels; [height, width] */
  sampleSize: [number, number] | null;
  inChannels: number;
  /** classes of a class-conditional model (not counting a guidance model's null class), else null */
  numClasses: number | null;
  /** whether the model records a null class for classifier-free guidance */
  guidance?: boolean;
  /** 2^(levels - 1): height and width must be multiples of it */
  sizeMultiple: number;
  backend: string;
  dtype: string;
  parameters: number | null;
  blockOutChannels: number[];
  /** the scheduler's num_train_timesteps: the most steps a run can take */
  trainTimesteps: number;
}

/** A request body (already schema-valid) against the limits and the model: a JobSpec, or an HttpError naming the field. */
export function normalizeRequest(body: ImageRequest, limits: Limits, models: ModelSummary[], randomSeed: () => bigint): JobSpec {
  const model = body.model === undefined ? models[0] : models.find((m) => m.name === body.model);
  if (!model) throw new HttpError(400, 'unknown_model', `model ${JSON.stringify(body.model)} is not served here (GET /v1/models lists them)`, 'model');
  if (body.steps > limits.maxSteps) throw new HttpError(400, 'limit_exceeded', `steps ${body.steps} is over this server's limit of ${limits.maxSteps}`, 'steps');
  if (body.steps > model.trainTimesteps)
    throw new HttpError(400, 'invalid_request', `steps ${body.steps} is over model ${model.name}'s num_train_timesteps (${model.trainTimesteps})`, 'steps');
  if (body.scheduler !== 'ddim' && body.eta !== undefined && body.eta !== 0)
    throw new HttpError(400, 'invalid_request', 'eta applies to the ddim scheduler only', 'eta');
  const batch = body.batch ?? body.classLabels?.length ?? 1;
  if (batch > limits.maxBatch) throw new HttpError(400, 'limit_exceeded', `batch ${batch} is over this server's limit of ${limits.maxBatch}`, 'batch');
  const height = body.height ?? model.sampleSize?.[0];
  const width = body.width ?? model.sampleSize?.[1];
  if (height === undefined || width === undefined) throw new HttpError(400, 'invalid_request', `model ${model.name} has no sample_size: give height and width`, 'height');
  for (const [field, v] of [['height', height], ['width', width]] as const)
    if (v % model.sizeMultiple !== 0) throw new HttpError(400, 'invalid_request', `${field} ${v} must be a multiple of ${model.sizeMultiple} for model ${model.name}`, field);
  if (height * width > limits.maxPixels)
    throw new HttpError(413, 'limit_exceeded', `${height}x${width} is over this server's limit of ${limits.maxPixels} pixels per image`, body.height !== undefined ? 'height' : 'width');
  if (height * width * batch > limits.maxTotalPixels)
    throw new HttpError(413, 'limit_exceeded', `${batch} images of ${height}x${width} are over this server's limit of ${limits.maxTotalPixels} pixels per request`, 'batch');

  let seed: bigint;
  if (body.seed === undefined) seed = randomSeed();
  else seed = BigInt(body.seed);
  if (seed + BigInt(batch - 1) > MAX_SEED)
    throw new HttpError(400, 'invalid_request', `seed ${seed} is too large: image i gets seed + i, which must stay below 2^64`, 'seed');
  const seeds = Array.from({ length: batch }, (_, i) => (seed + BigInt(i)).toString());

  let classLabels: number[] | null = null;
  if (model.numClasses !== null) {
    const n = model.numClasses;
    if (body.classLabels !== undefined) {
      if (body.classLabels.length !== batch)
        throw new HttpError(400, 'invalid_request', `classLabels has ${body.classLabels.length} labels for a batch of ${batch}`, 'classLabels');
      const bad = body.classLabels.findIndex((k) => k >= n);
      if (bad >= 0) throw new HttpError(400, 'invalid_request', `classLabels[${bad}] = ${body.classLabels[bad]} is not a class of model ${model.name} (0 to ${n - 1})`, 'classLabels');
      classLabels = body.classLabels.slice();
    } else {
      classLabels = Array.from({ length: batch }, (_, i) => i % n);
    }
  } else if (body.classLabels !== undefined && body.classLabels.length > 0) {
    throw new HttpError(400, 'invalid_request', `model ${model.name} is not class-conditional`, 'classLabels');
  }
  const guidanceScale = body.guidanceScale ?? 1;
  if (guidanceScale !== 1 && !model.guidance)
    throw new HttpError(400, 'invalid_request', `model ${model.name} was not trained for classifier-free guidance (no null class)`, 'guidanceScale');
  return {
    model: model.name,
    scheduler: body.scheduler,
    steps: body.steps,
    eta: body.scheduler === 'ddim' ? body.eta ?? 0 : 0,
    generator: body.generator ?? 'philox',
    seeds,
    classLabels,
    height,
    width,
    preview: body.preview === true,
    ...(guidanceScale !== 1 ? { guidanceScale } : {}),
  };
}

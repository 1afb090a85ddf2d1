// marble-diffusion/serve: the image-generation HTTP service (`marble serve`)
// and its Redis queue workers (`marble worker`), as a library.
export { createServer, createService, marble } from './server.js';
export type { MarbleServer, MarblePluginOptions, ServeOptions } from './server.js';
export { marbleRoutes, tokenMatches } from './http.js';
export type { MarbleRoutesOptions } from './http.js';
export { createMetrics } from './metrics.js';
export type { ServeMetrics } from './metrics.js';
export { LocalJobs, JobEndedError, QueueFullError } from './service.js';
export type { JobService, JobOutcome } from './service.js';
export { RedisJobs, startWorker, redisOptions } from './redis.js';
export type { MarbleWorker, WorkerOptions } from './redis.js';
export { ModelRunner } from './runner.js';
export { loadModels, describeModel, parseModelFlag } from './models.js';
export type { ModelSpec, LoadedModel, BackendChoice } from './models.js';
export { DEFAULT_LIMITS, HttpError, imageRequestSchema, normalizeRequest } from './spec.js';
export type { ImageRequest, JobSpec, JobResult, JobEvent, JobView, JobState, Limits, ModelSummary } from './spec.js';

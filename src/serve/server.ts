// createServer: a Fastify server with the marble routes, its models loaded
// in this process (or, with `redis`, jobs sent to `marble worker`s through
// BullMQ), pino logs, prom-client metrics, an OpenAPI document, and a
// graceful close.
import cors from '@fastify/cors';
import swagger from '@fastify/swagger';
import Fastify from 'fastify';
import type { FastifyInstance, FastifyPluginAsync } from 'fastify';
import type { LoggerOptions } from 'pino';

import { marbleRoutes } from './http.js';
import { createMetrics } from './metrics.js';
import type { ServeMetrics } from './metrics.js';
import { describeModel, loadModels } from './models.js';
import type { BackendChoice, ModelSpec } from './models.js';
import { RedisJobs } from './redis.js';
import { LocalJobs } from './service.js';
import type { JobService } from './service.js';
import { DEFAULT_LIMITS } from './spec.js';
import type { Limits } from './spec.js';

export interface ServeOptions {
  /** name -> folder; the API addresses models by these names only */
  models: ModelSpec[];
  backend?: BackendChoice;
  /** engine threads (cpu / wasm); default: the machine's cores */
  threads?: number;
  /** refuse engine batches whose activations need more bytes (a batch of several jobs that does not fit runs them one by one) */
  memoryLimitBytes?: number;
  /** default 127.0.0.1 */
  host?: string;
  /** default 8080; 0 picks a free port */
  port?: number;
  /** bearer token (compared in constant time); none: no authentication */
  token?: string;
  limits?: Partial<Limits>;
  /** jobs waiting per model before 429 (default 64) */
  queueLimit?: number;
  /** dynamic batching (default true) */
  batching?: boolean;
  /** how long a job arriving at an idle engine waits for company (ms, default 2) */
  batchWindowMs?: number;
  /** request body limit in bytes (default 16 KiB) */
  bodyLimit?: number;
  /** CORS: false (default), true (any origin) or an origin */
  cors?: boolean | string;
  /** redis://HOST:PORT: queue jobs in BullMQ for `marble worker`s instead of running them here */
  redis?: string;
  /** pino options, or false for no logs (default: info level to stdout) */
  logger?: boolean | LoggerOptions;
  /** how long a finished async job's record is kept (ms, default 10 min) */
  jobTtlMs?: number;
}

export interface MarbleServer {
  app: FastifyInstance;
  service: JobService;
  metrics: ServeMetrics;
  limits: Limits;
  /** Listens on options.host:port; resolves to the URL. */
  listen(): Promise<string>;
  /**
   * Graceful close: new requests get 503, queued jobs are cancelled, running
   * ones may finish within `deadlineMs` (default 30 s), then the rest are
   * cancelled, the server closes and the models are freed.
   */
  close(deadlineMs?: number): Promise<void>;
}

/** The service (models loaded here, or Redis), its metrics and limits, for createServer and the plugin. */
export async function createService(options: ServeOptions): Promise<{ service: JobService; metrics: ServeMetrics; limits: Limits }> {
  const limits: Limits = { ...DEFAULT_LIMITS, ...options.limits };
  for (const [k, v] of Object.entries(limits)) if (!Number.isInteger(v) || v < 1) throw new Error(`limit ${k} must be a positive integer, got ${v}`);
  const queueLimit = options.queueLimit ?? 64;
  const { metrics, attach } = createMetrics();
  let service: JobService;
  if (options.redis) {
    const models = await Promise.all(options.models.map((m) => describeModel(m)));
    service = await RedisJobs.connect(options.redis, models, { queueLimit });
  } else {
    const loaded = await loadModels(options.models, { backend: options.backend, threads: options.threads, memoryLimitBytes: options.memoryLimitBytes });
    service = new LocalJobs(loaded, {
      maxBatch: limits.maxBatch,
      queueLimit,
      batching: options.batching ?? true,
      batchWindowMs: options.batchWindowMs ?? 2,
      jobTtlMs: options.jobTtlMs,
      onBatch: (info) => metrics.batch(info),
    });
  }
  attach(service);
  return { service, metrics, limits };
}

export interface MarblePluginOptions extends ServeOptions {
  /** on the app's close: how long running jobs may take to finish (ms, default 30 s) */
  shutdownDeadlineMs?: number;
}

/**
 * The service as a Fastify plugin for an app of your own: loads the models
 * (or connects to Redis), registers the routes under the plugin's prefix,
 * and drains and frees them when the app closes. The plugin validates
 * with its own Ajv (unknown fields are errors, nothing coerced), whatever
 * the app's options. host, port, logger, bodyLimit and cors are the app's.
 */
export const marble: FastifyPluginAsync<MarblePluginOptions> = async (app, options) => {
  const { service, metrics, limits } = await createService(options);
  const state = { draining: false };
  app.addHook('preClose', async () => {
    state.draining = true;
    await service.drain(options.shutdownDeadlineMs ?? 30_000);
  });
  app.addHook('onClose', async () => service.close());
  await app.register(marbleRoutes, { service, limits, metrics, token: options.token, state });
};

export async function createServer(options: ServeOptions): Promise<MarbleServer> {
  const { service, metrics, limits } = await createService(options);

  const logger = options.logger === undefined ? { level: 'info' } : options.logger;
  const app = Fastify({
    logger,
    bodyLimit: options.bodyLimit ?? 16 * 1024,
    // A request must arrive whole within 30 s (slow senders do not hold sockets);
    // the answer to a synchronous request may take as long as its job.
    requestTimeout: 30_000,
    connectionTimeout: 0,
    keepAliveTimeout: 5000,
    return503OnClosing: true,
    forceCloseConnections: 'idle',
  });
  if (options.cors) await app.register(cors, { origin: options.cors === true ? true : options.cors });
  await app.register(swagger, {
    openapi: {
      info: { title: 'marble serve', version: '1', description: 'Image generation with diffusers UNet2DModel models (marble)' },
      components: options.token ? { securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } } } : undefined,
      security: options.token ? [{ bearer: [] }] : undefined,
    },
  });
  const state = { draining: false };
  await app.register(marbleRoutes, { service, limits, metrics, token: options.token, state });
  app.get('/openapi.json', { schema: { hide: true } }, async () => app.swagger());

  let closing: Promise<void> | null = null;
  return {
    app,
    service,
    metrics,
    limits,
    async listen() {
      return app.listen({ host: options.host ?? '127.0.0.1', port: options.port ?? 8080 });
    },
    close(deadlineMs = 30_000) {
      closing ??= (async () => {
        state.draining = true;
        app.log.info({ deadlineMs }, 'shutting down: draining');
        await service.drain(deadlineMs);
        await app.close();
        await service.close();
        app.log.info('shut down');
      })();
      return closing;
    },
  };
}

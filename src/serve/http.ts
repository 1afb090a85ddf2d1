// The HTTP API as a Fastify plugin: POST /v1/images, the job routes (state,
// Server-Sent Events, cancel), /v1/models, /healthz, /readyz, /metrics.
// Mount it in an app of your own with `app.register(marbleRoutes, {...})`, or
// let createServer (./server.ts) build the whole server.
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';

import { Ajv } from 'ajv';
import type { FastifyError, FastifyInstance, FastifyPluginAsync, FastifyReply } from 'fastify';

import type { ServeMetrics } from './metrics.js';
import { JobEndedError, QueueFullError, notFinished } from './service.js';
import type { JobService } from './service.js';
import { HttpError, imageRequestSchema, normalizeRequest } from './spec.js';
import type { ImageRequest, JobEvent, JobResult, JobView, Limits } from './spec.js';

export interface MarbleRoutesOptions {
  service: JobService;
  limits: Limits;
  metrics: ServeMetrics;
  /** bearer token every route but /healthz and /readyz asks for */
  token?: string;
  /** set true to refuse new work with 503 (graceful shutdown) */
  state: { draining: boolean };
  /** seconds between SSE keep-alive comments */
  sseKeepAliveSeconds?: number;
}

/** Route config: `open` routes need no token; `whileDraining` ones answer during shutdown. */
interface RouteFlags {
  open?: boolean;
  whileDraining?: boolean;
}

function digest(s: string): Buffer {
  return createHash('sha256').update(s).digest();
}

/** Constant-time: compares digests of equal length whatever the input lengths. */
export function tokenMatches(header: string | undefined, token: string): boolean {
  const m = /^Bearer (.+)$/.exec(header ?? '');
  return timingSafeEqual(digest(m ? m[1]! : ''), digest(token)) && m !== null;
}

const errorSchema = {
  type: 'object',
  properties: {
    error: {
      type: 'object',
      properties: { code: { type: 'string' }, message: { type: 'string' }, field: { type: 'string' } },
      required: ['code', 'message'],
    },
  },
} as const;

/** The field a validation error is about: "steps", "classLabels/0", or the unknown or missing property. */
function validationField(error: FastifyError): string | undefined {
  const v = error.validation?.[0];
  if (!v) return undefined;
  const params = v.params as { missingProperty?: string; additionalProperty?: string };
  const base = v.instancePath.replace(/^\//, '');
  const extra = params.missingProperty ?? params.additionalProperty;
  return extra ? (base ? `${base}/${extra}` : extra) : base || undefined;
}

function sendError(reply: FastifyReply, status: number, code: string, message: string, field?: string): FastifyReply {
  return reply.code(status).send({ error: { code, message, ...(field ? { field } : {}) } });
}

function imagesJson(id: string, view: { model: string }, result: JobResult) {
  return {
    id,
    model: view.model,
    width: result.width,
    height: result.height,
    images: result.images,
    batch: result.batch,
    samplingSeconds: result.samplingSeconds,
    worker: result.worker,
  };
}

/** A job view for the API: results of finished jobs without the grid (GET the PNG by format). */
function viewJson(view: JobView) {
  const { result, ...rest } = view;
  return result ? { ...rest, result: imagesJson(view.id, view, result) } : rest;
}

export const marbleRoutes: FastifyPluginAsync<MarbleRoutesOptions> = async (app: FastifyInstance, options) => {
  const { service, limits, metrics, state } = options;
  // Our own validator: unknown fields and wrong types are errors, never stripped or coerced,
  // whatever the host app's Ajv options.
  const ajv = new Ajv({ allErrors: false, coerceTypes: false, removeAdditional: false, useDefaults: false, strict: false });
  app.setValidatorCompiler(({ schema }) => ajv.compile(schema));
  // JSON only: any other body is a 415.
  app.removeContentTypeParser(['text/plain']);

  app.addHook('onRequest', async (request, reply) => {
    const flags = (request.routeOptions.config ?? {}) as RouteFlags;
    if (flags.open) return;
    if (options.token !== undefined && !tokenMatches(request.headers.authorization, options.token)) {
      metrics.rejected.inc({ reason: 'unauthorized' });
      reply.header('www-authenticate', 'Bearer');
      return sendError(reply, 401, 'unauthorized', 'a valid bearer token is needed (Authorization: Bearer <token>)');
    }
    if (state.draining && !flags.whileDraining) {
      reply.header('connection', 'close');
      return sendError(reply, 503, 'shutting_down', 'the service is shutting down');
    }
  });
  app.addHook('onResponse', async (request, reply) => {
    metrics.http.observe({ route: request.routeOptions.url ?? 'unknown', status: String(reply.statusCode) }, reply.elapsedTime / 1000);
  });

  app.setErrorHandler((error: FastifyError, request, reply) => {
    if (error instanceof HttpError) {
      metrics.rejected.inc({ reason: error.code });
      if (error.headers) reply.headers(error.headers);
      return sendError(reply, error.statusCode, error.code, error.message, error.field);
    }
    if (error.validation) {
      metrics.rejected.inc({ reason: 'invalid_request' });
      const field = validationField(error);
      return sendError(reply, 400, 'invalid_request', `${field ?? 'body'}: ${error.validation[0]?.message ?? error.message}`, field);
    }
    const status = error.statusCode ?? 500;
    if (status >= 400 && status < 500) {
      metrics.rejected.inc({ reason: error.code ?? 'bad_request' });
      const code = status === 413 ? 'body_too_large' : status === 415 ? 'unsupported_media_type' : 'invalid_request';
      return sendError(reply, status, code, error.message);
    }
    request.log.error({ err: error }, 'request failed');
    return sendError(reply, 500, 'internal', 'internal error');
  });
  app.setNotFoundHandler((request, reply) => sendError(reply, 404, 'not_found', `no route ${request.method} ${request.url.split('?')[0]}`));

  const randomSeed = () => randomBytes(8).readBigUInt64BE() >> 11n; // 53 bits: fits a JSON number

  app.post<{ Body: ImageRequest }>(
    '/v1/images',
    {
      schema: {
        summary: 'generate images',
        description: 'Synchronous by default: the PNG grid (format png) or JSON with base64 PNGs and each image\'s seed. With "async": true, 202 { id }.',
        body: imageRequestSchema,
        response: { 400: errorSchema, 413: errorSchema, 429: errorSchema, 503: errorSchema },
      },
    },
    async (request, reply) => {
      const body = request.body;
      const spec = normalizeRequest(body, limits, service.models(), randomSeed);
      let id: string;
      try {
        id = await service.submit(spec, { ephemeral: body.async !== true });
      } catch (e) {
        if (e instanceof QueueFullError) {
          metrics.rejected.inc({ reason: 'queue_full' });
          reply.header('retry-after', String(e.retryAfterSeconds));
          return sendError(reply, 429, 'queue_full', e.message);
        }
        if (e instanceof JobEndedError && e.code === 'shutting_down') return sendError(reply, 503, 'shutting_down', e.message);
        throw e;
      }
      if (body.async === true) {
        reply.header('location', `/v1/jobs/${id}`);
        return reply.code(202).send({ id, state: 'queued', model: spec.model, seeds: spec.seeds });
      }
      // A client that goes away cancels its job.
      const onClose = () => {
        if (!reply.raw.writableFinished) void service.cancel(id, 'the client disconnected');
      };
      reply.raw.once('close', onClose);
      try {
        const result = await service.wait(id);
        if (body.format === 'json') return reply.send(imagesJson(id, spec, result));
        return reply
          .type('image/png')
          .header('x-marble-job', id)
          .header('x-marble-seeds', spec.seeds.join(','))
          .header('x-marble-batch', `${result.batch.id};images=${result.batch.images};jobs=${result.batch.jobs}`)
          .send(Buffer.from(result.grid, 'base64'));
      } catch (e) {
        if (e instanceof JobEndedError) {
          if (e.code === 'shutting_down' || state.draining) return sendError(reply, 503, 'shutting_down', e.message);
          if (e.outcome === 'cancelled') return sendError(reply, 409, 'cancelled', e.message);
          // What the engine refused before working: the request's fault.
          if (e.code === 'ERR_MARBLE_MEMORY') return sendError(reply, 413, 'limit_exceeded', e.message);
          if (e.code === 'ERR_MARBLE_INPUT') return sendError(reply, 400, 'invalid_request', e.message);
          request.log.error({ job: id, code: e.code }, e.message);
          return sendError(reply, 500, e.code, e.message);
        }
        throw e;
      }
    },
  );

  const idParams = { type: 'object', properties: { id: { type: 'string', maxLength: 64 } }, required: ['id'] } as const;

  app.get<{ Params: { id: string } }>('/v1/jobs/:id', { schema: { summary: 'a job: state, progress, result when done', params: idParams } }, async (request, reply) => {
    const view = await service.get(request.params.id);
    if (!view) return sendError(reply, 404, 'not_found', `no job ${request.params.id}`);
    return viewJson(view);
  });

  app.delete<{ Params: { id: string } }>('/v1/jobs/:id', { schema: { summary: 'cancel a job (it stops within one step)', params: idParams } }, async (request, reply) => {
    const outcome = await service.cancel(request.params.id, 'cancelled by the client');
    if (outcome === null) return sendError(reply, 404, 'not_found', `no job ${request.params.id}`);
    if (outcome === 'finished') return sendError(reply, 409, 'finished', `job ${request.params.id} has already finished`);
    return { id: request.params.id, state: 'cancelled' };
  });

  const keepAlive = (options.sseKeepAliveSeconds ?? 15) * 1000;
  const streams = new Set<() => void>();
  // Event streams end before the server waits for its connections to close.
  app.addHook('preClose', async () => {
    for (const end of [...streams]) end();
  });

  app.get<{ Params: { id: string } }>(
    '/v1/jobs/:id/events',
    { schema: { summary: 'Server-Sent Events: queued (position), started, step (i/n, optional x0 preview), completed / failed / cancelled', params: idParams } },
    async (request, reply) => {
      const { id } = request.params;
      const first = await service.get(id);
      if (!first) return sendError(reply, 404, 'not_found', `no job ${id}`);
      reply.hijack();
      const res = reply.raw;
      res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', connection: 'keep-alive', 'x-accel-buffering': 'no' });
      let ended = false;
      const send = (event: string, data: unknown) => {
        if (!ended) res.write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
      };
      const buffered: JobEvent[] = [];
      let live = false;
      const onEvent = (event: JobEvent) => {
        if (!live) return void buffered.push(event);
        deliver(event);
      };
      const deliver = (event: JobEvent) => {
        switch (event.type) {
          case 'completed':
            send('completed', imagesJson(id, first, event.result));
            return end();
          case 'failed':
            send('failed', event.error);
            return end();
          case 'cancelled':
            send('cancelled', { reason: event.reason });
            return end();
          default: {
            const { type, ...data } = event;
            send(type, data);
          }
        }
      };
      const unsubscribe = service.subscribe(id, onEvent);
      const timer = setInterval(() => !ended && res.write(': keep-alive\n\n'), keepAlive).unref();
      const end = () => {
        if (ended) return;
        ended = true;
        unsubscribe();
        clearInterval(timer);
        streams.delete(end);
        res.end();
      };
      streams.add(end);
      res.once('close', end);
      // The state so far, then what happened since subscribing.
      const view = (await service.get(id)) ?? first;
      if (view.state === 'queued') send('queued', { position: view.position ?? null });
      else if (view.state === 'running') send('step', view.progress);
      if (!notFinished(view)) {
        if (view.state === 'completed' && view.result) send('completed', imagesJson(id, view, view.result));
        else if (view.state === 'failed') send('failed', view.error);
        else send('cancelled', { reason: view.error?.message ?? 'cancelled' });
        return end();
      }
      live = true;
      for (const e of buffered.splice(0)) deliver(e);
    },
  );

  app.get('/v1/models', { schema: { summary: 'the models served: name, config summary, backend, dtype' } }, async () => ({
    models: service.models().map((m) => ({
      name: m.name,
      backend: m.backend,
      dtype: m.dtype,
      sampleSize: m.sampleSize,
      channels: m.inChannels,
      classes: m.numClasses,
      guidance: m.guidance === true,
      parameters: m.parameters,
      blockOutChannels: m.blockOutChannels,
      trainTimesteps: m.trainTimesteps,
      sizeMultiple: m.sizeMultiple,
    })),
    limits,
    mode: service.mode,
  }));

  app.get('/healthz', { config: { open: true }, schema: { summary: 'liveness: answers while the engine is busy' } }, async () => ({ status: 'ok' }));
  app.get('/readyz', { config: { open: true }, schema: { summary: 'readiness: models loaded and not shutting down' } }, async (_request, reply) => {
    if (state.draining) return sendError(reply, 503, 'shutting_down', 'the service is shutting down');
    return { status: 'ready', models: service.models().map((m) => m.name) };
  });
  app.get('/metrics', { config: { whileDraining: true }, schema: { summary: 'Prometheus metrics', hide: true } }, async (_request, reply) => {
    reply.type(metrics.registry.contentType);
    return metrics.registry.metrics();
  });
};

// Scale-out through Redis with BullMQ: one queue per model. API nodes
// (`marble serve --redis`, RedisJobs) add jobs and follow them through
// BullMQ's queue events; `marble worker` processes (startWorker) run them
// with the same dynamic batching as a single server (a worker with
// concurrency N takes up to N jobs at once and batches them). A worker that
// dies mid-job loses nothing: its lock expires, BullMQ's stalled-job check
// puts the job back, another worker runs it, and the seed in the job gives
// the same image. Cancelling a running job goes through a pub/sub channel
// (and a key, for a job not yet picked up).
import { randomUUID } from 'node:crypto';
import { EventEmitter } from 'node:events';

import { Job, Queue, QueueEvents, WaitingError, Worker } from 'bullmq';
import type { ConnectionOptions } from 'bullmq';
import { Redis } from 'ioredis';
import type { RedisOptions } from 'ioredis';
import pino from 'pino';
import type { Logger } from 'pino';

import { loadModels } from './models.js';
import type { BackendChoice, ModelSpec } from './models.js';
import { JobEndedError, ModelRunner, QueueFullError, WORKER_ID } from './runner.js';
import type { JobOutcome, JobService } from './service.js';
import type { BatchInfo, JobEvent, JobResult, JobSpec, JobView, ModelSummary } from './spec.js';

export const QUEUE_PREFIX = 'marble';
const CANCEL_CHANNEL = 'marble:cancel';
const cancelKey = (id: string) => `marble:cancelled:${id}`;
const CANCELLED = 'cancelled: ';
const HANDED_BACK = 'handed_back';

/** redis://[user:password@]host:port[/db] as ioredis options. */
export function redisOptions(url: string, extra: RedisOptions = {}): RedisOptions {
  const u = new URL(url);
  if (u.protocol !== 'redis:' && u.protocol !== 'rediss:') throw new Error(`--redis ${url}: expected redis://HOST:PORT`);
  return {
    host: u.hostname,
    port: u.port ? Number(u.port) : 6379,
    username: u.username ? decodeURIComponent(u.username) : undefined,
    password: u.password ? decodeURIComponent(u.password) : undefined,
    db: u.pathname.length > 1 ? Number(u.pathname.slice(1)) : 0,
    tls: u.protocol === 'rediss:' ? {} : undefined,
    ...extra,
  };
}

/** What a worker reports through job.updateProgress. */
interface Progress {
  step: number;
  total: number;
  batch?: BatchInfo;
  worker?: string;
  preview?: string;
}

function progressEvent(p: Progress): JobEvent | null {
  if (typeof p !== 'object' || p === null) return null;
  if (p.step === 0 && p.batch) return { type: 'started', batch: p.batch, worker: p.worker ?? '' };
  return { type: 'step', step: p.step, total: p.total, ...(p.preview ? { preview: p.preview } : {}) };
}

function parseResult(value: unknown): JobResult {
  return (typeof value === 'string' ? JSON.parse(value) : value) as JobResult;
}

function endEvent(failedReason: string): JobEvent {
  return failedReason.startsWith(CANCELLED)
    ? { type: 'cancelled', reason: failedReason.slice(CANCELLED.length) }
    : { type: 'failed', error: { code: 'failed', message: failedReason } };
}

/** The job service of an API node: jobs go to BullMQ; workers run them. */
export class RedisJobs implements JobService {
  readonly mode = 'redis' as const;
  private readonly summaries: ModelSummary[];
  private readonly queues = new Map<string, Queue>();
  private readonly queueEvents: QueueEvents[] = [];
  private readonly redis: Redis;
  private readonly events = new EventEmitter();
  private readonly outcomes = new EventEmitter();
  private readonly queueLimit: number;
  private depth: Record<string, number> = {};
  private readonly poll: NodeJS.Timeout;
  private readonly waiting = new Set<string>();

  private constructor(summaries: ModelSummary[], redis: Redis, connection: RedisOptions, queueLimit: number) {
    this.summaries = summaries;
    this.redis = redis;
    this.queueLimit = queueLimit;
    this.events.setMaxListeners(0);
    for (const m of summaries) {
      this.queues.set(m.name, new Queue(m.name, { connection: connection as ConnectionOptions, prefix: QUEUE_PREFIX }));
      const qe = new QueueEvents(m.name, { connection: connection as ConnectionOptions, prefix: QUEUE_PREFIX });
      qe.on('progress', ({ jobId, data }) => {
        const event = progressEvent(data as unknown as Progress);
        if (event) this.events.emit(jobId, event);
      });
      qe.on('completed', ({ jobId, returnvalue }) => {
        const result = parseResult(returnvalue);
        this.events.emit(jobId, { type: 'completed', result } satisfies JobEvent);
        this.outcomes.emit('outcome', { model: m.name, outcome: 'completed', result } satisfies JobOutcome);
      });
      qe.on('failed', ({ jobId, failedReason }) => {
        const event = endEvent(failedReason);
        this.events.emit(jobId, event);
        this.outcomes.emit('outcome', { model: m.name, outcome: event.type === 'cancelled' ? 'cancelled' : 'failed' } satisfies JobOutcome);
      });
      qe.on('removed', ({ jobId }) => {
        this.events.emit(jobId, { type: 'cancelled', reason: 'cancelled before it started' } satisfies JobEvent);
        this.outcomes.emit('outcome', { model: m.name, outcome: 'cancelled' } satisfies JobOutcome);
      });
      qe.on('error', () => {}); // ioredis reconnects; requests meanwhile fail with their own errors
      this.queueEvents.push(qe);
    }
    this.poll = setInterval(() => void this.refreshDepth(), 2000).unref();
  }

  static async connect(url: string, models: ModelSummary[], options: { queueLimit: number }): Promise<RedisJobs> {
    const connection = redisOptions(url);
    const redis = new Redis({ ...connection, lazyConnect: true });
    await redis.connect();
    const jobs = new RedisJobs(models, redis, connection, options.queueLimit);
    await Promise.all(jobs.queueEvents.map((qe) => qe.waitUntilReady()));
    await jobs.refreshDepth();
    return jobs;
  }

  private async refreshDepth(): Promise<void> {
    try {
      for (const [name, q] of this.queues) {
        const c = await q.getJobCounts('waiting', 'prioritized', 'delayed');
        this.depth[name] = Object.values(c).reduce((a, b) => a + b, 0);
      }
    } catch {
      // keep the last counts while Redis is away
    }
  }

  models(): ModelSummary[] {
    return this.summaries;
  }

  async submit(spec: JobSpec): Promise<string> {
    const queue = this.queues.get(spec.model);
    if (!queue) throw new JobEndedError('failed', 'unknown_model', `model ${spec.model} is not served here`);
    const c = await queue.getJobCounts('waiting', 'prioritized', 'delayed');
    const waiting = Object.values(c).reduce((a, b) => a + b, 0);
    this.depth[spec.model] = waiting;
    if (waiting >= this.queueLimit) throw new QueueFullError(`model ${spec.model}: the queue is full (${this.queueLimit} jobs waiting)`, Math.max(1, Math.ceil(waiting / 4)));
    const id = randomUUID();
    await queue.add('sample', spec, {
      jobId: id,
      attempts: 1,
      removeOnComplete: { age: 600, count: 1000 },
      removeOnFail: { age: 600, count: 1000 },
    });
    return id;
  }

  private async find(id: string): Promise<Job | null> {
    for (const q of this.queues.values()) {
      const job = await Job.fromId(q, id);
      if (job) return job;
    }
    return null;
  }

  async get(id: string): Promise<JobView | null> {
    const job = await this.find(id);
    if (!job) return null;
    const spec = job.data as JobSpec;
    const state = await job.getState();
    const p = job.progress as unknown as Progress;
    const view: JobView = {
      id,
      model: spec.model,
      state: 'queued',
      progress: typeof p === 'object' && p !== null ? { step: p.step, total: p.total } : { step: 0, total: spec.steps },
      createdAt: new Date(job.timestamp).toISOString(),
      ...(typeof p === 'object' && p?.batch ? { batch: p.batch } : {}),
      ...(typeof p === 'object' && p?.worker ? { worker: p.worker } : {}),
    };
    if (state === 'active') view.state = 'running';
    else if (state === 'completed') {
      view.state = 'completed';
      view.result = parseResult(job.returnvalue);
    } else if (state === 'failed') {
      const e = endEvent(job.failedReason ?? '');
      view.state = e.type === 'cancelled' ? 'cancelled' : 'failed';
      view.error = e.type === 'cancelled' ? { code: 'cancelled', message: e.reason } : (e as { error: { code: string; message: string } }).error;
    }
    return view;
  }

  async cancel(id: string, reason = 'cancelled by the client'): Promise<'cancelled' | 'finished' | null> {
    const job = await this.find(id);
    if (!job) return null;
    const state = await job.getState();
    if (state === 'completed' || state === 'failed') return 'finished';
    // The key catches a job a worker picks up right now; the message one that runs.
    await this.redis.set(cancelKey(id), reason, 'EX', 3600);
    if (state !== 'active') {
      try {
        await job.remove();
        return 'cancelled';
      } catch {
        // taken by a worker meanwhile: cancel it there
      }
    }
    await this.redis.publish(CANCEL_CHANNEL, JSON.stringify({ id, reason }));
    return 'cancelled';
  }

  subscribe(id: string, listener: (event: JobEvent) => void): () => void {
    this.events.on(id, listener);
    return () => this.events.off(id, listener);
  }

  async wait(id: string): Promise<JobResult> {
    this.waiting.add(id);
    try {
      return await new Promise<JobResult>((resolve, reject) => {
        const settle = (event: JobEvent): boolean => {
          if (event.type === 'completed') resolve(event.result);
          else if (event.type === 'failed') reject(new JobEndedError('failed', event.error.code, event.error.message));
          else if (event.type === 'cancelled') reject(new JobEndedError('cancelled', 'cancelled', event.reason));
          else return false;
          unsubscribe();
          return true;
        };
        const unsubscribe = this.subscribe(id, settle);
        // It may have ended before we listened.
        this.get(id).then(
          (view) => {
            if (!view) return settle({ type: 'failed', error: { code: 'not_found', message: `job ${id} is not known` } });
            if (view.state === 'completed') settle({ type: 'completed', result: view.result! });
            else if (view.state === 'failed') settle({ type: 'failed', error: view.error! });
            else if (view.state === 'cancelled') settle({ type: 'cancelled', reason: view.error?.message ?? 'cancelled' });
          },
          (e: Error) => settle({ type: 'failed', error: { code: 'redis', message: e.message } }),
        );
      });
    } finally {
      this.waiting.delete(id);
    }
  }

  queueDepth(): Record<string, number> {
    return { ...this.depth };
  }

  onOutcome(listener: (o: JobOutcome) => void): void {
    this.outcomes.on('outcome', listener);
  }

  /** The workers finish the jobs; this node waits (up to the deadline) for the answers its clients wait for. */
  async drain(deadlineMs: number): Promise<void> {
    const deadline = Date.now() + deadlineMs;
    while (this.waiting.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    for (const id of this.waiting) this.events.emit(id, { type: 'cancelled', reason: 'the API node shut down (the job goes on in its worker: GET /v1/jobs/:id)' } satisfies JobEvent);
  }

  async close(): Promise<void> {
    clearInterval(this.poll);
    await Promise.all(this.queueEvents.map((qe) => qe.close()));
    await Promise.all([...this.queues.values()].map((q) => q.close()));
    this.redis.disconnect();
  }
}

export interface WorkerOptions {
  redis: string;
  models: ModelSpec[];
  backend?: BackendChoice;
  threads?: number;
  memoryLimitBytes?: number;
  /** jobs taken at once per model (they are batched together); default maxBatch */
  concurrency?: number;
  /** most images per engine batch (default 16) */
  maxBatch?: number;
  batching?: boolean;
  batchWindowMs?: number;
  /** BullMQ lock duration (ms, default 30 s): how long a dead worker's job waits before another takes it */
  lockDurationMs?: number;
  /** BullMQ stalled-job check interval (ms, default 30 s) */
  stalledIntervalMs?: number;
  logger?: Logger;
}

export interface MarbleWorker {
  /** Stops taking jobs, lets running ones finish (within deadlineMs), frees the models. */
  close(deadlineMs?: number): Promise<void>;
}

/** A `marble worker`: loads the models and runs their queues' jobs. */
export async function startWorker(options: WorkerOptions): Promise<MarbleWorker> {
  const log = options.logger ?? pino({ level: 'info' });
  const maxBatch = options.maxBatch ?? 16;
  const concurrency = options.concurrency ?? maxBatch;
  const loaded = await loadModels(options.models, { backend: options.backend, threads: options.threads, memoryLimitBytes: options.memoryLimitBytes });
  const connection = redisOptions(options.redis, { maxRetriesPerRequest: null });
  const redis = new Redis(connection);
  const sub = new Redis(connection);
  const runners = new Map<string, ModelRunner>();
  for (const m of loaded)
    runners.set(
      m.summary.name,
      new ModelRunner(m.summary.name, m.pipeline, { maxBatch, queueLimit: concurrency + 1, batching: options.batching ?? true, batchWindowMs: options.batchWindowMs ?? 2 }),
    );
  await sub.subscribe(CANCEL_CHANNEL);
  sub.on('message', (_channel: string, message: string) => {
    try {
      const { id, reason } = JSON.parse(message) as { id: string; reason: string };
      for (const r of runners.values()) r.cancel(id, reason);
    } catch {
      // not ours
    }
  });

  const workers: Worker[] = [];
  for (const [name, runner] of runners) {
    const worker = new Worker(
      name,
      async (job: Job, token?: string, signal?: AbortSignal) => {
        const spec = job.data as JobSpec;
        const id = job.id!;
        const cancelled = await redis.get(cancelKey(id));
        if (cancelled !== null) throw new Error(CANCELLED + cancelled);
        if (spec.model !== name) throw new Error(`job for model ${spec.model} in queue ${name}`);
        // BullMQ aborts a job whose lock this worker lost: another worker has it now.
        signal?.addEventListener('abort', () => runner.cancel(id, 'this worker lost the job', HANDED_BACK), { once: true });
        log.info({ job: id, model: name, images: spec.seeds.length, steps: spec.steps, attempt: job.attemptsStarted }, 'job started');
        let batch: BatchInfo | undefined;
        try {
          const result = await runner.submit(id, spec, (event) => {
            let progress: Progress | null = null;
            if (event.type === 'started') {
              batch = event.batch;
              progress = { step: 0, total: spec.steps, batch, worker: WORKER_ID };
            } else if (event.type === 'step') progress = { step: event.step, total: event.total, batch, worker: WORKER_ID, preview: event.preview };
            if (progress) job.updateProgress(progress as unknown as object).catch(() => {});
          });
          log.info({ job: id, model: name, batch: result.batch, seconds: result.samplingSeconds }, 'job completed');
          return result;
        } catch (e) {
          if (e instanceof JobEndedError && e.code === HANDED_BACK) {
            // Shutting down: back to the queue for another worker (it re-runs from step 0, same seeds).
            await job.moveToWait(token).catch((err: Error) => log.warn({ job: id, reason: err.message }, 'could not hand the job back (its lock expired: the stalled check will)'));
            log.info({ job: id, model: name }, 'job handed back');
            throw new WaitingError();
          }
          if (e instanceof JobEndedError && e.outcome === 'cancelled') throw new Error(CANCELLED + e.message);
          throw e;
        }
      },
      {
        connection: connection as ConnectionOptions,
        prefix: QUEUE_PREFIX,
        concurrency,
        lockDuration: options.lockDurationMs ?? 30_000,
        stalledInterval: options.stalledIntervalMs ?? 30_000,
        maxStalledCount: 2,
      },
    );
    worker.on('error', (e) => log.error({ err: e }, 'worker error'));
    worker.on('failed', (job, e) => log.warn({ job: job?.id, reason: e.message }, 'job failed'));
    workers.push(worker);
  }
  await Promise.all(workers.map((w) => w.waitUntilReady()));
  log.info({ models: [...runners.keys()], concurrency, maxBatch, worker: WORKER_ID }, 'worker ready');

  let closing: Promise<void> | null = null;
  return {
    close(deadlineMs = 30_000) {
      closing ??= (async () => {
        // worker.close() stops taking jobs and waits for those it holds; past the
        // deadline they go back to the queue, for another worker.
        const closed = Promise.all(workers.map((w) => w.close()));
        const handBack = () => {
          for (const r of runners.values()) {
            r.stopAccepting('the worker is shutting down', HANDED_BACK);
            r.cancelRunning('the worker is shutting down', HANDED_BACK);
          }
        };
        const timer = setTimeout(handBack, deadlineMs);
        await closed;
        clearTimeout(timer);
        // An engine run stops at its next step once its jobs are gone.
        await Promise.all([...runners.values()].map((r) => r.idle(10_000)));
        sub.disconnect();
        redis.disconnect();
        for (const m of loaded) m.pipeline.unet.dispose();
      })();
      return closing;
    },
  };
}

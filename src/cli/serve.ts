// `marble serve` (an HTTP image-generation service) and `marble worker` (a
// Redis queue worker for `marble serve --redis`); the code is in src/serve/.
// Fastify, BullMQ and pino load only when one of these commands runs.
import { Command, InvalidArgumentError, Option } from 'commander';

import { parseModelFlag } from '../serve/models.js';
import type { BackendChoice, ModelSpec } from '../serve/models.js';
import { resolveSampleModel } from './embedded_model.js';

function integer(name: string, min: number) {
  return (value: string): number => {
    const n = Number(value);
    if (!Number.isInteger(n) || n < min) throw new InvalidArgumentError(`${name} must be an integer >= ${min}`);
    return n;
  };
}

function collectModel(value: string, previous: ModelSpec[] = []): ModelSpec[] {
  try {
    return [...previous, parseModelFlag(value)];
  } catch (e) {
    throw new InvalidArgumentError((e as Error).message);
  }
}

/** --model flags, or the embedded MNIST model as "mnist". */
function modelsOrDefault(models: ModelSpec[] | undefined): ModelSpec[] {
  return models && models.length > 0 ? models : [{ name: 'mnist', path: resolveSampleModel(undefined) }];
}

function redisUrl(value: string): string {
  try {
    const u = new URL(value);
    if (u.protocol !== 'redis:' && u.protocol !== 'rediss:') throw new Error();
  } catch {
    throw new InvalidArgumentError('--redis must be a redis://HOST:PORT URL');
  }
  return value;
}

interface ServeFlags {
  model?: ModelSpec[];
  backend: BackendChoice;
  threads?: number;
  memoryLimit?: number;
  port: number;
  host: string;
  token?: string;
  maxBatch: number;
  maxSteps: number;
  maxPixels: number;
  queueLimit: number;
  batching: boolean;
  batchWindow: number;
  bodyLimit: number;
  cors?: string;
  redis?: string;
  shutdownDeadline: number;
  logLevel: string;
}

async function serveCommand(flags: ServeFlags): Promise<void> {
  const { createServer } = await import('../serve/server.js');
  const server = await createServer({
    models: modelsOrDefault(flags.model),
    backend: flags.backend,
    threads: flags.threads,
    memoryLimitBytes: flags.memoryLimit === undefined ? undefined : flags.memoryLimit * 2 ** 20,
    host: flags.host,
    port: flags.port,
    token: flags.token ?? process.env['MARBLE_TOKEN'] ?? undefined,
    limits: { maxBatch: flags.maxBatch, maxSteps: flags.maxSteps, maxPixels: flags.maxPixels, maxTotalPixels: flags.maxBatch * flags.maxPixels },
    queueLimit: flags.queueLimit,
    batching: flags.batching,
    batchWindowMs: flags.batchWindow,
    bodyLimit: flags.bodyLimit,
    cors: flags.cors === undefined ? false : flags.cors === '*' ? true : flags.cors,
    redis: flags.redis,
    logger: { level: flags.logLevel },
  });
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    server.app.log.info({ signal }, 'stopping');
    server.close(flags.shutdownDeadline * 1000).then(
      () => process.exit(0),
      (e: Error) => {
        server.app.log.error({ err: e }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
  const url = await server.listen();
  server.app.log.info({ url, models: server.service.models().map((m) => `${m.name} (${m.backend})`), mode: server.service.mode }, 'marble serve ready');
}

interface WorkerFlags {
  redis: string;
  model?: ModelSpec[];
  backend: BackendChoice;
  threads?: number;
  memoryLimit?: number;
  concurrency?: number;
  maxBatch: number;
  batching: boolean;
  lockDuration: number;
  stalledInterval: number;
  shutdownDeadline: number;
  logLevel: string;
}

async function workerCommand(flags: WorkerFlags): Promise<void> {
  const { default: pino } = await import('pino');
  const { startWorker } = await import('../serve/redis.js');
  const logger = pino({ level: flags.logLevel });
  const worker = await startWorker({
    redis: flags.redis,
    models: modelsOrDefault(flags.model),
    backend: flags.backend,
    threads: flags.threads,
    memoryLimitBytes: flags.memoryLimit === undefined ? undefined : flags.memoryLimit * 2 ** 20,
    concurrency: flags.concurrency,
    maxBatch: flags.maxBatch,
    batching: flags.batching,
    lockDurationMs: flags.lockDuration,
    stalledIntervalMs: flags.stalledInterval,
    logger,
  });
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, 'stopping: finishing running jobs');
    worker.close(flags.shutdownDeadline * 1000).then(
      () => process.exit(0),
      (e: Error) => {
        logger.error({ err: e }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}

const backendOption = () => new Option('--backend <name>', 'engine backend').choices(['auto', 'cpu', 'wasm', 'cuda']).default('auto');
const modelOption = '--model <name=path>';
const modelHelp = 'a model to serve, as NAME=FOLDER (repeatable; requests name models, never paths; default: the embedded MNIST model as "mnist")';

export function registerServeCommands(program: Command): void {
  program
    .command('serve')
    .description('an HTTP image-generation service (POST /v1/images, jobs, SSE, /metrics); with --redis, a front for `marble worker`s')
    .option(modelOption, modelHelp, collectModel)
    .addOption(backendOption())
    .option('--threads <n>', 'engine threads (default: the machine\'s cores)', integer('--threads', 1))
    .option('--memory-limit <MiB>', 'most activation memory per engine batch; a batch of jobs over it runs them one by one', integer('--memory-limit', 1))
    .option('--port <port>', 'TCP port (0: any free one)', integer('--port', 0), 8080)
    .option('--host <address>', 'address to bind (127.0.0.1: this machine only)', '127.0.0.1')
    .option('--token <token>', 'require "Authorization: Bearer <token>" (default: $MARBLE_TOKEN, else none)')
    .option('--max-batch <n>', 'most images per request and per engine batch', integer('--max-batch', 1), 16)
    .option('--max-steps <n>', 'most inference steps per request', integer('--max-steps', 1), 1000)
    .option('--max-pixels <n>', 'most pixels (height x width) per image', integer('--max-pixels', 1), 256 * 256)
    .option('--queue-limit <n>', 'jobs waiting per model before answering 429', integer('--queue-limit', 1), 64)
    .option('--no-batching', 'run every request alone (no dynamic batching)')
    .option('--batch-window <ms>', 'how long a request arriving at an idle engine waits for others to batch with', integer('--batch-window', 0), 2)
    .option('--body-limit <bytes>', 'request body size limit', integer('--body-limit', 64), 16 * 1024)
    .option('--cors <origin>', 'answer CORS requests from this origin (* for any; default: CORS off)')
    .option('--redis <url>', 'queue jobs in Redis (BullMQ) for `marble worker`s instead of running them here', redisUrl)
    .option('--shutdown-deadline <s>', 'on SIGTERM, how long running jobs may take to finish', integer('--shutdown-deadline', 0), 30)
    .option('--log-level <level>', 'pino log level', 'info')
    .action(serveCommand);
  program
    .command('worker')
    .description('run `marble serve --redis` jobs from Redis (BullMQ); run as many as needed, on any machines')
    .requiredOption('--redis <url>', 'the Redis the API nodes use, redis://HOST:PORT', redisUrl)
    .option(modelOption, modelHelp, collectModel)
    .addOption(backendOption())
    .option('--threads <n>', 'engine threads (default: the machine\'s cores)', integer('--threads', 1))
    .option('--memory-limit <MiB>', 'most activation memory per engine batch; a batch of jobs over it runs them one by one', integer('--memory-limit', 1))
    .option('--concurrency <n>', 'jobs taken at once per model, batched together (default: --max-batch)', integer('--concurrency', 1))
    .option('--max-batch <n>', 'most images per engine batch', integer('--max-batch', 1), 16)
    .option('--no-batching', 'run every job alone')
    .option('--lock-duration <ms>', 'BullMQ job lock: how soon a dead worker\'s job goes to another worker', integer('--lock-duration', 1000), 30_000)
    .option('--stalled-interval <ms>', 'BullMQ stalled-job check interval', integer('--stalled-interval', 500), 30_000)
    .option('--shutdown-deadline <s>', 'on SIGTERM, how long running jobs may take to finish', integer('--shutdown-deadline', 0), 30)
    .option('--log-level <level>', 'pino log level', 'info')
    .action(workerCommand);
}

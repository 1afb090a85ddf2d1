// Scale-out: a throwaway redis-server, one API node (`createServer({ redis })`)
// and two `marble worker` processes. 20 jobs complete; a worker killed with
// SIGKILL mid-job loses nothing: BullMQ's stalled-job check hands its job to
// the other worker, which produces the same images (same seeds).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';

import { createServer } from '../src/serve/index.js';
import type { MarbleServer } from '../src/serve/index.js';
import { EMBEDDED, REDIS_SERVER, postJson, readSse, runCli, stopChild, startRedis, waitFor } from './serve_helpers.js';
import type { CliProcess, RedisProcess } from './serve_helpers.js';

interface ImagesJson {
  id: string;
  images: { seed: string; classLabel: number | null; png: string }[];
  batch: { id: string; images: number; jobs: number };
  worker: string;
}

// A missing redis-server is a failure under CI (.ci/run installs it), a skip elsewhere.
if (!REDIS_SERVER && process.env.CI)
  test('redis-server is installed', () => assert.fail('redis-server is missing: apt-get install -y redis-server (.ci/run does)'));
describe('marble serve --redis with two marble workers', { skip: REDIS_SERVER ? false : 'redis-server is not installed' }, () => {
  let redis: RedisProcess;
  let server: MarbleServer;
  let base: string;
  const workers: CliProcess[] = [];
  const workerIds: string[] = [];

  const startWorker = async (): Promise<CliProcess> => {
    const w = runCli([
      'worker', '--redis', redis.url, '--model', `mnist=${EMBEDDED}`, '--backend', 'cpu', '--threads', '1',
      '--concurrency', '4', '--max-batch', '8', '--lock-duration', '2000', '--stalled-interval', '1000', '--shutdown-deadline', '1',
    ]);
    const ready = await w.waitForLog('worker ready');
    workerIds.push(ready['worker'] as string);
    workers.push(w);
    return w;
  };

  before(async () => {
    redis = await startRedis();
    server = await createServer({ models: [{ name: 'mnist', path: EMBEDDED }], redis: redis.url, port: 0, logger: false, queueLimit: 64 });
    base = await server.listen();
    await Promise.all([startWorker(), startWorker()]);
  });
  after(async () => {
    await server?.close(2000);
    await Promise.all(workers.map((w) => stopChild(w.child)));
    await redis?.stop();
  });

  test('the API is the same: models, sync PNG and JSON, async job with SSE, 20 jobs complete', async () => {
    const models = (await (await fetch(`${base}/v1/models`)).json()) as { mode: string; models: { name: string; classes: number }[] };
    assert.equal(models.mode, 'redis');
    assert.deepEqual(models.models.map((m) => [m.name, m.classes]), [['mnist', 10]]);
    const png = await postJson(base, { scheduler: 'ddim', steps: 3, batch: 2, seed: 5 });
    assert.equal(png.status, 200);
    assert.equal(png.headers.get('content-type'), 'image/png');

    const accepted = (await (await postJson(base, { scheduler: 'ddim', steps: 4, seed: 3, async: true })).json()) as { id: string };
    const events = await readSse(await fetch(`${base}/v1/jobs/${accepted.id}/events`));
    assert.equal(events.at(-1)!.event, 'completed', events.map((e) => e.event).join(','));
    const job = (await (await fetch(`${base}/v1/jobs/${accepted.id}`)).json()) as { state: string; result: ImagesJson };
    assert.equal(job.state, 'completed');
    assert.equal(job.result.images[0]!.seed, '3');

    const results = (await Promise.all(
      Array.from({ length: 20 }, (_, i) => postJson(base, { scheduler: 'ddim', steps: 3, batch: 1 + (i % 2), seed: i, format: 'json' }).then(async (r) => {
        assert.equal(r.status, 200);
        return r.json();
      })),
    )) as ImagesJson[];
    assert.equal(results.length, 20);
    assert.ok(results.every((r, i) => r.images.length === 1 + (i % 2) && r.images[0]!.seed === String(i)));
    const byWorker = new Set(results.map((r) => r.worker));
    assert.ok([...byWorker].every((w) => workerIds.includes(w)));
    // Batching happens in the workers too (equal settings, concurrency 4).
    assert.ok(results.some((r) => r.batch.jobs > 1), 'some jobs were batched');

    // Bad input is refused by the API node before it reaches Redis.
    assert.equal((await postJson(base, { scheduler: 'ddim', steps: 3, bogus: true })).status, 400);
    // Cancel a queued-or-running job.
    const long = (await (await postJson(base, { scheduler: 'ddpm', steps: 400, async: true })).json()) as { id: string };
    await waitFor('the long job to start', async () => ((await (await fetch(`${base}/v1/jobs/${long.id}`)).json()) as { state: string }).state === 'running', 20_000);
    assert.equal((await fetch(`${base}/v1/jobs/${long.id}`, { method: 'DELETE' })).status, 200);
    await waitFor('the long job to be cancelled', async () => ((await (await fetch(`${base}/v1/jobs/${long.id}`)).json()) as { state: string }).state === 'cancelled', 10_000);
  });

  test('a second API node answers for the same jobs; a full Redis queue gives 429', async () => {
    // "idle" has no worker: its jobs wait.
    const node2 = await createServer({
      models: [{ name: 'mnist', path: EMBEDDED }, { name: 'idle', path: EMBEDDED }],
      redis: redis.url, port: 0, logger: false, queueLimit: 2,
    });
    const base2 = await node2.listen();
    try {
      const { id } = (await (await postJson(base, { scheduler: 'ddim', steps: 2, seed: 9, async: true })).json()) as { id: string };
      const done = await waitFor('the job, seen from the other node', async () => {
        const view = (await (await fetch(`${base2}/v1/jobs/${id}`)).json()) as { state: string; result?: ImagesJson };
        return view.state === 'completed' ? view.result! : null;
      });
      assert.equal(done.images[0]!.seed, '9');
      const idle = { model: 'idle', scheduler: 'ddim', steps: 2, async: true };
      const waiting: string[] = [];
      for (let i = 0; i < 2; i++) {
        const res = await postJson(base2, idle);
        assert.equal(res.status, 202);
        waiting.push(((await res.json()) as { id: string }).id);
      }
      const full = await postJson(base2, idle);
      assert.equal(full.status, 429);
      assert.ok(Number(full.headers.get('retry-after')) >= 1);
      // Cancelling a waiting job removes it from Redis.
      for (const w of waiting) assert.equal((await fetch(`${base2}/v1/jobs/${w}`, { method: 'DELETE' })).status, 200);
      assert.equal((await fetch(`${base2}/v1/jobs/${waiting[0]}`)).status, 404);
      assert.equal((await postJson(base2, idle)).status, 202);
    } finally {
      await node2.close(1000);
    }
  });

  test('a worker stopped with SIGTERM past its deadline hands its job back; it exits 0 and the other worker completes the job', async () => {
    const { id } = (await (await postJson(base, { scheduler: 'ddpm', steps: 300, batch: 1, seed: 77, async: true })).json()) as { id: string };
    const running = await waitFor('the job to run', async () => {
      const view = (await (await fetch(`${base}/v1/jobs/${id}`)).json()) as { state: string; worker?: string; progress: { step: number } };
      return view.state === 'running' && view.worker && view.progress.step >= 2 ? view : null;
    }, 30_000);
    const index = workerIds.indexOf(running.worker!);
    const stopping = workers[index]!;
    stopping.child.kill('SIGTERM');
    assert.equal((await stopping.exited).code, 0, stopping.output());
    assert.match(stopping.output(), /job handed back/);
    const done = await waitFor('the job to complete elsewhere', async () => {
      const view = (await (await fetch(`${base}/v1/jobs/${id}`)).json()) as { state: string; result?: ImagesJson };
      assert.notEqual(view.state, 'failed');
      return view.state === 'completed' ? view.result! : null;
    }, 60_000, 250);
    assert.notEqual(done.worker, running.worker);
    // Back to two workers.
    workers.splice(index, 1);
    workerIds.splice(index, 1);
    await startWorker();
  });

  test('a worker killed mid-job: the other worker completes it with the same images', async () => {
    const request = { scheduler: 'ddim', steps: 150, eta: 1, batch: 2, seed: 4242, classLabels: [3, 8] };
    const { id } = (await (await postJson(base, { ...request, async: true })).json()) as { id: string };
    const running = await waitFor('the job to run', async () => {
      const view = (await (await fetch(`${base}/v1/jobs/${id}`)).json()) as { state: string; worker?: string; progress: { step: number } };
      return view.state === 'running' && view.worker && view.progress.step >= 2 ? view : null;
    }, 30_000);
    const victim = workers[workerIds.indexOf(running.worker!)]!;
    assert.ok(victim, `job runs on ${running.worker}, not one of ${workerIds.join(', ')}`);
    victim.child.kill('SIGKILL');
    await victim.exited;
    const done = await waitFor('the job to complete elsewhere', async () => {
      const view = (await (await fetch(`${base}/v1/jobs/${id}`)).json()) as { state: string; result?: ImagesJson };
      assert.notEqual(view.state, 'failed');
      return view.state === 'completed' ? view.result! : null;
    }, 90_000, 250);
    assert.notEqual(done.worker, running.worker);
    // The same request again (on the surviving worker) gives the same images, bit for bit.
    const again = (await (await postJson(base, { ...request, format: 'json' })).json()) as ImagesJson;
    assert.deepEqual(done.images, again.images);
  });
});

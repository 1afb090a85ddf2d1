// `marble serve` in one process: every endpoint, every bad input a 4xx JSON
// error (and the server keeps serving), the bearer token, a disconnect
// cancels, a full queue answers 429, dynamic batching (batched images equal
// the same requests run alone), /healthz while the engine is busy, and
// SIGTERM drains the CLI server.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';

import { decodePng } from '../src/core/image/png.js';
import { loadPipeline } from '../src/index.js';
import Fastify from 'fastify';

import { createServer, marble } from '../src/serve/index.js';
import type { MarbleServer, ServeOptions } from '../src/serve/index.js';
import { fixturePath } from './helpers.js';
import { EMBEDDED, postJson, readSse, runCli, waitFor } from './serve_helpers.js';

const MODEL = [{ name: 'mnist', path: EMBEDDED }];

async function start(options: Partial<ServeOptions> = {}): Promise<{ server: MarbleServer; base: string }> {
  const server = await createServer({ models: MODEL, backend: 'cpu', threads: 1, port: 0, logger: false, ...options });
  const base = await server.listen();
  return { server, base };
}

async function metric(base: string, line: string, headers: Record<string, string> = {}): Promise<number> {
  const text = await (await fetch(`${base}/metrics`, { headers })).text();
  const m = text.split('\n').find((l) => l.startsWith(line + ' '));
  return m ? Number(m.slice(line.length + 1)) : 0;
}

interface ImagesJson {
  id: string;
  images: { seed: string; classLabel: number | null; png: string }[];
  batch: { id: string; images: number; jobs: number };
}

describe('marble serve (in-process, cpu)', () => {
  let server: MarbleServer;
  let base: string;
  before(async () => ({ server, base } = await start({ queueLimit: 4, limits: { maxBatch: 8, maxSteps: 200 } })));
  after(() => server.close(1000));

  test('health, readiness, models, metrics, OpenAPI', async () => {
    assert.deepEqual(await (await fetch(`${base}/healthz`)).json(), { status: 'ok' });
    const ready = (await (await fetch(`${base}/readyz`)).json()) as { models: string[] };
    assert.deepEqual(ready.models, ['mnist']);
    const models = (await (await fetch(`${base}/v1/models`)).json()) as { models: Record<string, unknown>[] };
    assert.equal(models.models[0]!['name'], 'mnist');
    assert.equal(models.models[0]!['backend'], 'cpu');
    assert.equal(models.models[0]!['classes'], 10);
    assert.equal(models.models[0]!['guidance'], true);
    assert.deepEqual(models.models[0]!['sampleSize'], [28, 28]);
    const metrics = await (await fetch(`${base}/metrics`)).text();
    for (const name of ['marble_queue_depth', 'marble_jobs_total', 'marble_sampling_seconds', 'marble_images_per_second', 'nodejs_eventloop_lag_seconds'])
      assert.ok(metrics.includes(name), `metrics lack ${name}`);
    const openapi = (await (await fetch(`${base}/openapi.json`)).json()) as { openapi: string; paths: Record<string, unknown> };
    assert.match(openapi.openapi, /^3\./);
    for (const p of ['/v1/images', '/v1/jobs/{id}', '/v1/jobs/{id}/events', '/v1/models', '/healthz']) assert.ok(openapi.paths[p], `OpenAPI lacks ${p}`);
  });

  test('POST /v1/images: a PNG grid, or JSON with each image\'s seed and label', async () => {
    const png = await postJson(base, { scheduler: 'ddim', steps: 4, batch: 3, seed: 7 });
    assert.equal(png.status, 200);
    assert.equal(png.headers.get('content-type'), 'image/png');
    assert.equal(png.headers.get('x-marble-seeds'), '7,8,9');
    const grid = decodePng(new Uint8Array(await png.arrayBuffer()));
    assert.deepEqual([grid.width, grid.height], [2 * 28 + 2, 2 * 28 + 2]);

    const res = await postJson(base, { scheduler: 'ddpm', steps: 3, batch: 2, seed: '18446744073709551614', classLabels: [3, 9], format: 'json', generator: 'torch' });
    assert.equal(res.status, 200);
    const body = (await res.json()) as ImagesJson;
    assert.deepEqual(body.images.map((i) => [i.seed, i.classLabel]), [['18446744073709551614', 3], ['18446744073709551615', 9]]);
    const one = decodePng(Buffer.from(body.images[0]!.png, 'base64'));
    assert.deepEqual([one.width, one.height], [28, 28]);
    // The fast solvers too: image i is the one its seed gives alone (per-sample noise).
    const solver = (await (await postJson(base, { scheduler: 'dpm++', steps: 5, batch: 2, seed: 40, format: 'json' })).json()) as ImagesJson;
    const alone = (await (await postJson(base, { scheduler: 'dpm++', steps: 5, batch: 1, seed: 41, classLabels: [1], format: 'json' })).json()) as ImagesJson;
    assert.equal(solver.images[1]!.png, alone.images[0]!.png, 'dpm++: the batch\'s second image equals seed 41 alone');
    assert.equal((await postJson(base, { scheduler: 'euler-a', steps: 3, eta: 0.5 })).status, 400, 'eta is DDIM\'s');
    // Without a seed: a random one, reported.
    const random = (await (await postJson(base, { scheduler: 'ddim', steps: 2, format: 'json' })).json()) as ImagesJson;
    assert.match(random.images[0]!.seed, /^\d+$/);
  });

  test('async job: 202, GET state and result, SSE progress with previews, DELETE cancels within a step', async () => {
    const res = await postJson(base, { scheduler: 'ddim', steps: 6, batch: 2, seed: 1, async: true, preview: true });
    assert.equal(res.status, 202);
    const { id } = (await res.json()) as { id: string };
    const events = await readSse(await fetch(`${base}/v1/jobs/${id}/events`));
    const names = events.map((e) => e.event);
    assert.equal(names.at(-1), 'completed', names.join(','));
    const steps = events.filter((e) => e.event === 'step').map((e) => e.data as { step: number; total: number; preview?: string });
    assert.ok(steps.length >= 1 && steps.at(-1)!.step === 6 && steps.at(-1)!.total === 6);
    assert.ok(steps.some((s) => s.preview && decodePng(Buffer.from(s.preview, 'base64')).width === 2 * 28 + 2), 'previews of the 2-image grid');
    const job = (await (await fetch(`${base}/v1/jobs/${id}`)).json()) as { state: string; progress: { step: number }; result: ImagesJson };
    assert.equal(job.state, 'completed');
    assert.equal(job.result.images.length, 2);
    // Finished jobs answer their state to SSE and refuse DELETE.
    const late = await readSse(await fetch(`${base}/v1/jobs/${id}/events`));
    assert.equal(late.at(-1)!.event, 'completed');
    assert.equal((await fetch(`${base}/v1/jobs/${id}`, { method: 'DELETE' })).status, 409);

    // A long job, cancelled while it runs.
    const long = (await (await postJson(base, { scheduler: 'ddpm', steps: 200, batch: 1, async: true })).json()) as { id: string };
    const sse = fetch(`${base}/v1/jobs/${long.id}/events`).then((r) => readSse(r));
    await waitFor('the long job to run', async () => ((await (await fetch(`${base}/v1/jobs/${long.id}`)).json()) as { progress: { step: number } }).progress.step >= 1);
    const del = await fetch(`${base}/v1/jobs/${long.id}`, { method: 'DELETE' });
    assert.equal(del.status, 200);
    const cancelledEvents = await sse;
    assert.equal(cancelledEvents.at(-1)!.event, 'cancelled');
    const state = (await (await fetch(`${base}/v1/jobs/${long.id}`)).json()) as { state: string; progress: { step: number } };
    assert.equal(state.state, 'cancelled');
    // Stopped within a step: the engine is free for the next job (not 200 steps later).
    await new Promise((r) => setTimeout(r, 200));
    const progressAfter = ((await (await fetch(`${base}/v1/jobs/${long.id}`)).json()) as { progress: { step: number } }).progress.step;
    assert.ok(progressAfter < 200, `cancelled job went on to step ${progressAfter}`);
    assert.equal((await fetch(`${base}/v1/jobs/nope`)).status, 404);
    assert.equal((await fetch(`${base}/v1/jobs/nope/events`)).status, 404);
    assert.equal((await fetch(`${base}/v1/jobs/nope`, { method: 'DELETE' })).status, 404);
  });

  test('every bad input gets its 4xx JSON error, and the server keeps serving', async () => {
    const ok = { scheduler: 'ddim', steps: 2 };
    const cases: [string, string | object, number, string | undefined, Record<string, string>?][] = [
      ['invalid JSON', '{"scheduler": "ddim", "steps": 2', 400, undefined],
      ['empty body', '', 400, undefined],
      ['not an object', '[1,2]', 400, undefined],
      ['wrong type', { ...ok, steps: '2' }, 400, 'steps'],
      ['fractional steps', { ...ok, steps: 2.5 }, 400, 'steps'],
      ['unknown field', { ...ok, path: '/etc/passwd' }, 400, 'path'],
      ['unknown scheduler', { ...ok, scheduler: 'euler-ish' }, 400, 'scheduler'],
      ['missing steps', { scheduler: 'ddim' }, 400, 'steps'],
      ['steps over the limit', { ...ok, steps: 201 }, 400, 'steps'],
      ['batch over the limit', { ...ok, batch: 9 }, 400, 'batch'],
      ['batch 0', { ...ok, batch: 0 }, 400, 'batch'],
      ['unknown model', { ...ok, model: 'sd-xl' }, 400, 'model'],
      ['a path as the model', { ...ok, model: '../../models/mnist' }, 400, 'model'],
      ['negative seed', { ...ok, seed: -1 }, 400, 'seed'],
      ['huge seed', { ...ok, seed: 1e300 }, 400, 'seed'],
      ['seed string over 2^64', { ...ok, seed: '18446744073709551616' }, 400, 'seed'],
      ['seed + batch over 2^64', { ...ok, seed: '18446744073709551615', batch: 2 }, 400, 'seed'],
      ['NaN seed (as text)', '{"scheduler":"ddim","steps":2,"seed":NaN}', 400, undefined],
      ['seed not a number', { ...ok, seed: 'abc' }, 400, 'seed'],
      ['negative eta', { ...ok, eta: -0.5 }, 400, 'eta'],
      ['eta with ddpm', { scheduler: 'ddpm', steps: 2, eta: 0.5 }, 400, 'eta'],
      ['class label out of range', { ...ok, classLabels: [10] }, 400, 'classLabels'],
      ['labels and batch disagree', { ...ok, batch: 2, classLabels: [1] }, 400, 'classLabels'],
      ['negative guidance', { ...ok, guidanceScale: -1 }, 400, 'guidanceScale'],
      ['guidance not a number', { ...ok, guidanceScale: 'strong' }, 400, 'guidanceScale'],
      ['size not a multiple of 4', { ...ok, height: 30 }, 400, 'height'],
      ['image too large', { ...ok, height: 512, width: 512 }, 413, 'height'],
      ['oversize body', { ...ok, classLabels: new Array(9000).fill(1) }, 413, undefined],
      ['unknown format', { ...ok, format: 'gif' }, 400, 'format'],
      ['wrong content type', 'scheduler=ddim', 415, undefined, { 'content-type': 'application/x-www-form-urlencoded' }],
      ['text body', 'hello', 415, undefined, { 'content-type': 'text/plain' }],
    ];
    for (const [name, body, status, field, headers] of cases) {
      const res = await postJson(base, body, headers ?? {});
      assert.equal(res.status, status, `${name}: status ${res.status}`);
      const json = (await res.json()) as { error: { code: string; message: string; field?: string } };
      assert.ok(json.error?.code && json.error.message, `${name}: no JSON error`);
      if (field) assert.equal(json.error.field, field, `${name}: field ${json.error.field} (${json.error.message})`);
    }
    assert.equal((await fetch(`${base}/v1/nothing`)).status, 404);
    assert.equal((await fetch(`${base}/v1/images`)).status, 404);
    // Still serving; guidance where the model has a null class (the embedded one does) ...
    assert.equal((await postJson(base, ok)).status, 200);
    assert.equal((await postJson(base, { ...ok, guidanceScale: 1.25, classLabels: [7] })).status, 200);
    // ... and a 400 naming the field where it has none.
    const plain = await start({ models: [{ name: 'tiny', path: fixturePath('unet/tiny') }] });
    try {
      const res = await postJson(plain.base, { ...ok, guidanceScale: 3 });
      assert.equal(res.status, 400, 'guidance on a model without a null class');
      assert.equal(((await res.json()) as { error: { field?: string } }).error.field, 'guidanceScale');
    } finally {
      await plain.server.close(1000);
    }
  });

  test('a client that disconnects cancels its job', async () => {
    const before_ = await metric(base, 'marble_jobs_total{model="mnist",outcome="cancelled"}');
    const controller = new AbortController();
    const pending = postJson(base, { scheduler: 'ddpm', steps: 200, batch: 2 }, {}, controller.signal).catch((e: Error) => e);
    await waitFor('the job to run', async () => (await metric(base, 'marble_queue_depth{model="mnist"}')) === 0 && (await new Promise((r) => setTimeout(r, 100)), true));
    controller.abort();
    assert.ok((await pending) instanceof Error);
    await waitFor('the job to be cancelled', async () => (await metric(base, 'marble_jobs_total{model="mnist",outcome="cancelled"}')) === before_ + 1, 5000);
    // The engine is free: a short request is answered at once.
    const t0 = performance.now();
    assert.equal((await postJson(base, { scheduler: 'ddim', steps: 2 })).status, 200);
    assert.ok(performance.now() - t0 < 5000);
  });

  test('a full queue answers 429 with Retry-After; /healthz answers fast while the engine is busy', async () => {
    const long = { scheduler: 'ddpm', steps: 200, batch: 8, async: true };
    const ids: string[] = [];
    const first = (await (await postJson(base, long)).json()) as { id: string };
    ids.push(first.id);
    await waitFor('the first job to run', async () => ((await (await fetch(`${base}/v1/jobs/${first.id}`)).json()) as { state: string }).state === 'running');
    // Different step counts: nothing batches with anything.
    for (let i = 0; i < 4; i++) {
      const res = await postJson(base, { ...long, steps: 100 + i });
      assert.equal(res.status, 202);
      ids.push(((await res.json()) as { id: string }).id);
    }
    const queued = (await (await fetch(`${base}/v1/jobs/${ids[2]}`)).json()) as { state: string; position: number };
    assert.deepEqual([queued.state, queued.position], ['queued', 2]);
    const full = await postJson(base, { ...long, steps: 150 });
    assert.equal(full.status, 429);
    assert.ok(Number(full.headers.get('retry-after')) >= 1);
    assert.equal(((await full.json()) as { error: { code: string } }).error.code, 'queue_full');
    // The event loop is free while the engine works.
    const latencies: number[] = [];
    for (let i = 0; i < 20; i++) {
      const t0 = performance.now();
      assert.equal((await fetch(`${base}/healthz`)).status, 200);
      latencies.push(performance.now() - t0);
    }
    latencies.sort((a, b) => a - b);
    assert.ok(latencies[18]! < 100, `healthz p95 ${latencies[18]!.toFixed(1)} ms while sampling`);
    for (const id of ids) await fetch(`${base}/v1/jobs/${id}`, { method: 'DELETE' });
  });
});

describe('dynamic batching', () => {
  for (const backend of ['cpu', 'wasm'] as const) {
    test(`concurrent requests share an engine batch; their images equal the same requests run alone (${backend})`, async () => {
      const { server, base } = await start({ backend, batchWindowMs: 300 });
      try {
        const requests = [
          { scheduler: 'ddim', steps: 3, eta: 0.5, batch: 2, seed: 11, classLabels: [4, 2], format: 'json' },
          { scheduler: 'ddim', steps: 3, eta: 0.5, batch: 1, seed: 11, classLabels: [7], format: 'json' },
          { scheduler: 'ddim', steps: 3, eta: 0.5, batch: 3, seed: 900, format: 'json' },
        ];
        const together = (await Promise.all(requests.map(async (r) => (await postJson(base, r)).json()))) as ImagesJson[];
        assert.ok(together.every((t) => t.batch.id === together[0]!.batch.id), 'one engine batch');
        assert.deepEqual([together[0]!.batch.jobs, together[0]!.batch.images], [3, 6]);
        for (let i = 0; i < requests.length; i++) {
          const alone = (await (await postJson(base, requests[i]!)).json()) as ImagesJson;
          assert.deepEqual([alone.batch.jobs, alone.batch.images], [1, requests[i]!.batch]);
          assert.deepEqual(alone.images, together[i]!.images, `request ${i}: batched images differ from the same request alone`);
        }
        // A request that cannot share (other steps) runs in its own batch.
        const [a, b] = (await Promise.all([postJson(base, requests[1]!), postJson(base, { ...requests[1]!, steps: 2 })].map(async (p) => (await p).json()))) as ImagesJson[];
        assert.notEqual(a!.batch.id, b!.batch.id);
      } finally {
        await server.close(1000);
      }
    });
  }

  test('a batch over the memory limit runs its jobs one by one; a request over it alone is a 413', async () => {
    const probe = await loadPipeline(EMBEDDED, { backend: 'cpu', threads: 1 });
    const limit = probe.unet.activationBytes(2, 32, 32);
    probe.unet.dispose();
    const { server, base } = await start({ batchWindowMs: 300, memoryLimitBytes: limit });
    try {
      const r = { scheduler: 'ddim', steps: 2, batch: 2, format: 'json' };
      const responses = await Promise.all([postJson(base, { ...r, seed: 1 }), postJson(base, { ...r, seed: 2 })]);
      assert.deepEqual(responses.map((x) => x.status), [200, 200]);
      const out = (await Promise.all(responses.map((x) => x.json()))) as ImagesJson[];
      assert.ok(out.every((o) => o.batch.jobs === 1 && o.batch.images === 2), JSON.stringify(out.map((o) => o.batch)));
      const tooBig = await postJson(base, { ...r, batch: 4 });
      assert.equal(tooBig.status, 413);
      assert.equal(((await tooBig.json()) as { error: { code: string } }).error.code, 'limit_exceeded');
    } finally {
      await server.close(1000);
    }
  });

  test('with batching off every request runs alone', async () => {
    const { server, base } = await start({ batching: false });
    try {
      const r = { scheduler: 'ddim', steps: 2, format: 'json' };
      const out = (await Promise.all([postJson(base, r), postJson(base, r)].map(async (p) => (await p).json()))) as ImagesJson[];
      assert.ok(out.every((o) => o.batch.jobs === 1));
    } finally {
      await server.close(1000);
    }
  });
});

test('bearer token: wrong or missing is 401; health stays open; CORS only when enabled', async () => {
  const { server, base } = await start({ token: 's3cret-token' });
  try {
    const ok = { scheduler: 'ddim', steps: 1 };
    assert.equal((await postJson(base, ok)).status, 401);
    const wrong = await postJson(base, ok, { authorization: 'Bearer s3cret-tokex' });
    assert.equal(wrong.status, 401);
    assert.equal(((await wrong.json()) as { error: { code: string } }).error.code, 'unauthorized');
    assert.equal((await postJson(base, ok, { authorization: 'Basic s3cret-token' })).status, 401);
    assert.equal((await fetch(`${base}/v1/models`)).status, 401);
    assert.equal((await fetch(`${base}/metrics`)).status, 401);
    assert.equal((await postJson(base, ok, { authorization: 'Bearer s3cret-token' })).status, 200);
    assert.equal((await fetch(`${base}/healthz`)).status, 200);
    assert.equal((await fetch(`${base}/readyz`)).status, 200);
    const preflight = await fetch(`${base}/v1/images`, { method: 'OPTIONS', headers: { origin: 'http://evil.example', 'access-control-request-method': 'POST' } });
    assert.equal(preflight.headers.get('access-control-allow-origin'), null);
  } finally {
    await server.close(1000);
  }
});

test('the Fastify plugin in an app of its own: under a prefix, strict validation whatever the app\'s Ajv options, token on its routes only', async () => {
  const app = Fastify({ logger: false }); // Fastify's default Ajv strips unknown fields and coerces types
  app.get('/hello', async () => ({ hello: 'world' }));
  await app.register(marble, { prefix: '/gen', models: MODEL, backend: 'cpu', threads: 1, token: 't0ken', shutdownDeadlineMs: 1000 });
  const base = await app.listen({ host: '127.0.0.1', port: 0 });
  try {
    const auth = { authorization: 'Bearer t0ken' };
    const post = (body: object, headers: Record<string, string> = auth) =>
      fetch(`${base}/gen/v1/images`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body) });
    assert.equal((await fetch(`${base}/hello`)).status, 200);
    assert.equal((await fetch(`${base}/gen/healthz`)).status, 200);
    assert.equal((await post({ scheduler: 'ddim', steps: 1 }, {})).status, 401);
    const unknown = await post({ scheduler: 'ddim', steps: 1, extra: true });
    assert.equal(unknown.status, 400);
    assert.equal(((await unknown.json()) as { error: { field: string } }).error.field, 'extra');
    assert.equal((await post({ scheduler: 'ddim', steps: '1' })).status, 400);
    const ok = await post({ scheduler: 'ddim', steps: 1 });
    assert.equal(ok.status, 200);
    assert.equal(ok.headers.get('content-type'), 'image/png');
  } finally {
    await app.close();
  }
});

test('marble serve (CLI): serves the embedded model; SIGTERM refuses new work, finishes the running job, exits 0', async () => {
  const cli = runCli(['serve', '--port', '0', '--threads', '1', '--backend', 'cpu', '--shutdown-deadline', '20']);
  try {
    const ready = await cli.waitForLog('marble serve ready');
    const base = ready['url'] as string;
    assert.match(base, /^http:\/\/127\.0\.0\.1:\d+$/);
    const running = postJson(base, { scheduler: 'ddim', steps: 60, batch: 4, format: 'json' });
    await new Promise((r) => setTimeout(r, 300));
    cli.child.kill('SIGTERM');
    await cli.waitForLog('shutting down: draining', 10_000);
    const refused = await postJson(base, { scheduler: 'ddim', steps: 1 }).catch((e: Error) => e);
    if (!(refused instanceof Error)) assert.equal(refused.status, 503);
    const res = await running;
    assert.equal(res.status, 200);
    assert.equal(((await res.json()) as ImagesJson).images.length, 4);
    const { code } = await cli.exited;
    assert.equal(code, 0, cli.output());
  } finally {
    if (cli.child.exitCode === null) cli.child.kill('SIGKILL');
  }
});

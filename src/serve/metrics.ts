// Prometheus metrics (prom-client), on a registry of the server's own so
// that several servers in one process do not mix.
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

import type { JobService } from './service.js';

export interface ServeMetrics {
  registry: Registry;
  rejected: Counter<'reason'>;
  http: Histogram<'route' | 'status'>;
  batch(info: { model: string; images: number; jobs: number; seconds: number; failed: boolean }): void;
}

export function createMetrics(): { metrics: ServeMetrics; attach(service: JobService): void } {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, eventLoopMonitoringPrecision: 10 });
  let service: JobService | null = null;
  new Gauge({
    name: 'marble_queue_depth',
    help: 'jobs waiting, per model',
    labelNames: ['model'],
    registers: [registry],
    collect() {
      if (!service) return;
      for (const [model, n] of Object.entries(service.queueDepth())) this.set({ model }, n);
    },
  });
  const jobs = new Counter({ name: 'marble_jobs_total', help: 'jobs by outcome', labelNames: ['model', 'outcome'], registers: [registry] });
  const sampling = new Histogram({
    name: 'marble_sampling_seconds',
    help: 'seconds per engine batch (local) or per job (through Redis: its batch on the worker)',
    labelNames: ['model'],
    buckets: [0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120],
    registers: [registry],
  });
  const batchImages = new Histogram({ name: 'marble_batch_images', help: 'images per engine batch', labelNames: ['model'], buckets: [1, 2, 4, 8, 16, 32, 64], registers: [registry] });
  const images = new Counter({ name: 'marble_images_total', help: 'images generated', labelNames: ['model'], registers: [registry] });
  // images/s over the last minute (rate(marble_images_total[1m]) says the same in PromQL)
  const window: { t: number; n: number }[] = [];
  new Gauge({
    name: 'marble_images_per_second',
    help: 'images generated per second over the last 60 s',
    registers: [registry],
    collect() {
      const now = Date.now();
      while (window.length > 0 && now - window[0]!.t > 60_000) window.shift();
      const n = window.reduce((s, w) => s + w.n, 0);
      const span = Math.min(60, Math.max(1, (now - (window[0]?.t ?? now)) / 1000));
      this.set(n / span);
    },
  });
  const rejected = new Counter({ name: 'marble_rejected_total', help: 'requests refused before queueing, by reason', labelNames: ['reason'], registers: [registry] });
  const http = new Histogram({
    name: 'marble_http_request_seconds',
    help: 'HTTP request duration',
    labelNames: ['route', 'status'],
    buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30],
    registers: [registry],
  });
  const metrics: ServeMetrics = {
    registry,
    rejected,
    http,
    batch(info) {
      sampling.observe({ model: info.model }, info.seconds);
      batchImages.observe({ model: info.model }, info.images);
    },
  };
  return {
    metrics,
    attach(s) {
      service = s;
      s.onOutcome((o) => {
        jobs.inc({ model: o.model, outcome: o.outcome });
        if (o.result) {
          images.inc({ model: o.model }, o.result.images.length);
          window.push({ t: Date.now(), n: o.result.images.length });
          if (window.length > 100_000) window.shift();
          if (s.mode === 'redis') sampling.observe({ model: o.model }, o.result.samplingSeconds);
        }
      });
    },
  };
}

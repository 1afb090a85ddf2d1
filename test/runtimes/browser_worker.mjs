// The browser side of test/runtimes.test.ts: a module Web Worker that imports
// the static bundle (dist/browser/marble.js) as a page without a bundler would.
import * as marble from '../../dist/browser/marble.js';
import { fetchModelFiles, probe } from './probe.mjs';

self.onmessage = async ({ data }) => {
  try {
    const root = new URL('../../', import.meta.url);
    const report = await probe(marble, {
      runtime: data.crossOriginIsolated ? 'chromium' : 'chromium-not-isolated',
      threads: data.threads,
      sources: { url: marble.embeddedModel(), relative: '../../models/mnist', files: await fetchModelFiles(root) },
    });
    self.postMessage(report);
  } catch (e) {
    self.postMessage({ error: `${e?.name}: ${e?.message}\n${e?.stack}` });
  }
};

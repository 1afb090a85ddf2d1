// The web demo (examples/web, served by `marble demo`) in Chromium: the page
// is cross-origin isolated (threaded wasm), Generate draws digits, the
// progress and x0 preview update, the native-vs-wasm note appears, and Stop
// ends a long run within a step. MARBLE_DEMO_SCREENSHOT=FILE saves the
// screenshot the README shows (docs/demo.png).
import './../src/node/host.js';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { tmpdir } from 'node:os';
import path from 'node:path';

import { startDemoServer } from '../src/cli/demo.js';
import { CHROMIUM_ARGS, requireRuntime } from './support/runtimes.js';

test('the web demo generates digits in a Web Worker, shows native vs wasm, and stops within a step', async (t) => {
  const executablePath = requireRuntime(t, 'chromium');
  if (!executablePath) return;
  const demo = await startDemoServer({ port: 0 });
  const { chromium } = await import('playwright-core');
  const browser = await chromium.launch({ executablePath, args: CHROMIUM_ARGS });
  try {
    const page = await browser.newPage({ viewport: { width: 900, height: 720 } });
    const errors: string[] = [];
    page.on('pageerror', (e) => errors.push(e.message));
    await page.goto(demo.url);
    await page.waitForSelector('body[data-ready="true"]');
    assert.equal(await page.evaluate('crossOriginIsolated'), true, 'marble demo serves COOP/COEP');

    await page.selectOption('#scheduler', 'dpm++');
    await page.fill('#steps', '10');
    await page.fill('#batch', '8');
    await page.click('#generate');
    await page.waitForSelector('body[data-done="true"]', { timeout: 60_000 });
    const ink = (await page.evaluate(`(() => {
      const c = document.getElementById('result');
      const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
      let lit = 0;
      for (let i = 0; i < d.length; i += 4) if (d[i] > 128) lit++;
      return lit / (d.length / 4);
    })()`)) as number;
    // Digits: white strokes on black, a few percent to a third of the pixels.
    assert.ok(ink > 0.03 && ink < 0.5, `fraction of lit pixels in the result: ${ink}`);
    assert.match(await page.textContent('#status') ?? '', /Done: 10 steps/);
    assert.match(await page.textContent('#backend') ?? '', /wasm \(simd128\), 2 threads/);
    await page.waitForFunction(`document.getElementById('native').textContent.includes('Native vs wasm')`, undefined, { timeout: 60_000 });
    // The run was guided (the form's default, 1.25: the embedded model has a null class); the native timing refuses a bad scale.
    assert.equal(await page.inputValue('#guidance'), '1.25');
    const bad = await fetch(new URL('api/native?scheduler=ddim&steps=1&batch=1&guidance=-1', demo.url));
    assert.equal(bad.status, 400);
    await page.screenshot({ path: process.env.MARBLE_DEMO_SCREENSHOT ?? path.join(tmpdir(), 'marble-demo.png') });

    // Stop: a 1000-step run ends within a step of the click.
    await page.selectOption('#scheduler', 'ddpm');
    await page.fill('#steps', '1000');
    await page.fill('#batch', '1');
    await page.click('#generate');
    await page.waitForFunction(`/Step [3-9]/.test(document.getElementById('status').textContent)`, undefined, { timeout: 30_000 });
    await page.click('#stop');
    await page.waitForFunction(`document.getElementById('status').textContent === 'Stopped.'`, undefined, { timeout: 5_000 });
    assert.equal(await page.isDisabled('#generate'), false);
    assert.deepEqual(errors, []);
  } finally {
    await browser.close();
    await demo.close();
  }
});

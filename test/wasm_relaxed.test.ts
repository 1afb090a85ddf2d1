// The relaxed-SIMD builds (wasm/dist/marble-relaxed.wasm and
// marble-threads-relaxed.wasm: the GEMM micro-kernel's f32x4.relaxed_madd).
// The loaders pick them only when asked (options.wasm.relaxedSimd, or
// MARBLE_WASM_RELAXED=1) and a module using relaxed SIMD validates; the
// default is the plain SIMD128 builds, which give the same bits everywhere. Node 20 runs relaxed SIMD only with
// --experimental-wasm-relaxed-simd (later runtimes by default), so the
// checks on them run in a child Node that has it.
import '../src/node/host.js';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

import { createWasmBackend } from '../src/node/wasm.js';
import { relaxedSimdSupported } from '../src/core/backend/wasm_features.js';

const here = (file: string) => fileURLToPath(new URL(file, import.meta.url));
// This process's runtime may have relaxed SIMD already; else the flag turns it on.
const relaxedFlags = relaxedSimdSupported() ? [] : ['--experimental-wasm-relaxed-simd'];

function isasIn(flags: string[], env: NodeJS.ProcessEnv = {}): string[] {
  const wasm = here('../src/node/wasm.js');
  const script = `import('${wasm}').then(async (m) => { const out = []; for (const threads of [1, 2]) { const b = await m.createWasmBackend({ threads }); out.push(b.isa()); b.dispose?.(); } console.log(JSON.stringify(out)); });`;
  const text = execFileSync(process.execPath, [...flags, '--input-type=module', '-e', script], {
    encoding: 'utf8',
    env: { ...process.env, ...env },
  });
  return JSON.parse(text.trim().split('\n').pop()!) as string[];
}

test('the plain builds run by default; the relaxed-SIMD ones when asked for and the runtime has relaxed SIMD', async () => {
  assert.deepEqual(isasIn(relaxedFlags), ['simd128', 'simd128'], 'default: plain, even where relaxed SIMD validates');
  assert.deepEqual(isasIn(relaxedFlags, { MARBLE_WASM_RELAXED: '1' }), ['relaxed-simd128', 'relaxed-simd128'], 'MARBLE_WASM_RELAXED=1');
  assert.deepEqual(isasIn([], { MARBLE_WASM_RELAXED: '1' }), relaxedSimdSupported() ? ['relaxed-simd128', 'relaxed-simd128'] : ['simd128', 'simd128'], 'asked for where the runtime lacks it: plain');
  const here = await createWasmBackend({ threads: 1, wasm: { relaxedSimd: true } });
  assert.equal(here.isa(), relaxedSimdSupported() ? 'relaxed-simd128' : 'simd128', 'this process, relaxedSimd: true');
});

test('every diffusers forward fixture matches on the relaxed-SIMD builds (single and 2 threads, 1e-4)', () => {
  // unet_forward's own tables (cpu, wasm single, wasm-threads-2) in a child
  // whose wasm backends are the relaxed builds; it exits non-zero on a failure.
  execFileSync(process.execPath, [...relaxedFlags, here('./unet_forward.test.js')], {
    encoding: 'utf8',
    env: { ...process.env, MARBLE_WASM_RELAXED: '1' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
});

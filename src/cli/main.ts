#!/usr/bin/env node
// The `marble` command. `marble info` reports what this machine offers;
// `marble sample` joins with the sampling work.
import os from 'node:os';
import { Command } from 'commander';

import { loadAddon, nativeAvailable } from '../backend/native.js';
import { createWasmBackend, wasmPath } from '../backend/wasm.js';

// The smallest module that uses a SIMD128 instruction (v128.const, drop).
const SIMD_PROBE = new Uint8Array([
  0, 97, 115, 109, 1, 0, 0, 0, // magic, version
  1, 4, 1, 96, 0, 0, // type section: () -> ()
  3, 2, 1, 0, // function section
  10, 23, 1, 21, 0, 253, 12, ...new Array(16).fill(0), 26, 11, // code: v128.const 0; drop; end
]);

async function info(): Promise<void> {
  const lines: [string, string][] = [];
  lines.push(['cpu', `${os.cpus()[0]?.model ?? 'unknown'} (${os.cpus().length} cores, ${os.arch()})`]);
  if (nativeAvailable()) {
    const addon = loadAddon();
    lines.push(['backend cpu', `available: ${addon.isa()} GEMM kernel, ${addon.threads()} threads`]);
  } else {
    lines.push(['backend cpu', 'not built (npm run build:addon)']);
  }
  try {
    const wasm = await createWasmBackend();
    lines.push(['backend wasm', `available: ${wasm.isa()}, ${wasm.threads()} thread (${wasmPath()})`]);
  } catch (e) {
    lines.push(['backend wasm', `unavailable: ${(e as Error).message}`]);
  }
  lines.push(['wasm simd128', WebAssembly.validate(SIMD_PROBE) ? 'supported by this runtime' : 'NOT supported by this runtime']);
  lines.push(['backend cuda', 'not yet implemented']);
  lines.push(['node', process.version]);
  const width = Math.max(...lines.map(([k]) => k.length));
  for (const [key, value] of lines) console.log(`${key.padEnd(width)}  ${value}`);
}

const program = new Command();
program.name('marble').description('Diffusion models (diffusers UNet2DModel) for JavaScript runtimes');
program.command('info').description('backends present, CPU features, threads, wasm SIMD support').action(info);
program.parseAsync(process.argv).catch((e: unknown) => {
  console.error(`marble: ${(e as Error).message}`);
  process.exit(1);
});

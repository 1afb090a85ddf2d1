// Parity on every GEMM kernel path: the micro-kernel is chosen once per
// process (weights are packed for its panel width), so each path runs in a
// child process with MARBLE_ISA forcing it, against the diffusers fixtures.
import '../src/node/host.js';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import os from 'node:os';
import { readFileSync } from 'node:fs';

const child = fileURLToPath(new URL('./support/forward_parity.js', import.meta.url));
const cpuFlags = os.platform() === 'linux' ? readFileSync('/proc/cpuinfo', 'utf8') : '';
const available: Record<string, boolean> = {
  generic: true,
  avx2: os.arch() === 'x64' && /\bavx2\b/.test(cpuFlags) && /\bfma\b/.test(cpuFlags),
  avx512: os.arch() === 'x64' && /\bavx512f\b/.test(cpuFlags),
};

for (const isa of ['generic', 'avx2', 'avx512']) {
  test(`forward fixtures match diffusers on the ${isa} kernel`, { skip: available[isa] ? false : `this CPU has no ${isa}` }, () => {
    const output = execFileSync(process.execPath, [child], { env: { ...process.env, MARBLE_ISA: isa }, encoding: 'utf8' });
    const result = JSON.parse(output.trim().split('\n').pop()!) as { isa: string; worstOverTolerance: number };
    assert.equal(result.isa, isa, 'the forced kernel is the one that ran');
    assert.ok(result.worstOverTolerance <= 1, `worst error is ${result.worstOverTolerance} x the tolerance`);
  });
}

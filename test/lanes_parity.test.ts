// The passes built once per vector width (native/cpu/lanes_<isa>.cpp:
// Winograd's data transforms, F(2x2, 3x3) and F(4x4, 3x3), softmax over a row; groupnorm_<isa>.cpp:
// GroupNorm's backward second pass and forward statistics) claim the same bits as
// their four-lane originals, the ones the generic build and wasm run. Each
// wide variant this CPU has runs on random inputs of every awkward size
// (rows of 1 to 300, 1 to 96 channels) and is compared bit for bit
// (native/cpu/lanes_parity.cpp, in the dev addon).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import os from 'node:os';

import { DEV_ADDON, loadDevAddon } from './support/dev_addon.js';

interface ParityRow {
  pass: string;
  isa: string;
  cases: number;
  mismatches: number;
}

const cpuFlags = os.platform() === 'linux' ? readFileSync('/proc/cpuinfo', 'utf8') : '';
const wide = [
  ...(os.arch() === 'x64' && /\bavx2\b/.test(cpuFlags) && /\bfma\b/.test(cpuFlags) ? ['avx2'] : []),
  ...(os.arch() === 'x64' && /\bavx512f\b/.test(cpuFlags) ? ['avx512'] : []),
];

test('wide Winograd transforms, softmax and GroupNorm passes give the four-lane bits', { skip: existsSync(DEV_ADDON) ? false : 'no dev addon (npm test builds it)' }, () => {
  const addon = loadDevAddon() as unknown as { lanesParity(seed: number): ParityRow[] };
  for (const seed of [1, 2024]) {
    const rows = addon.lanesParity(seed);
    assert.deepEqual([...new Set(rows.map((r) => r.isa))], wide, 'every wide variant this CPU has was checked');
    for (const r of rows) {
      assert.ok(r.cases >= 40, `${r.pass} ${r.isa}: ${r.cases} cases`);
      assert.equal(r.mismatches, 0, `${r.pass} on ${r.isa}: ${r.mismatches} of ${r.cases} cases differ from four lanes (seed ${seed})`);
    }
    assert.equal(rows.length, 9 * wide.length);
  }
});

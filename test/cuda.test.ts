// The CUDA backend against the references on a machine with a GPU (the suite
// is test/cuda_suite.ts); one skipped test naming the reason everywhere else.
// test/emulation/cuda_emulation.test.ts runs the same suite with the kernels
// emulated. The suite's op self-test needs the development addon with CUDA
// (MARBLE_DEV=ON MARBLE_DEV_CUDA=ON npm run build:addon; bench/gpu-check.sh
// builds it): this process uses it, through MARBLE_ADDON, when it is there.
import '../src/node/host.js';
import { test } from 'node:test';
import { existsSync } from 'node:fs';

import { cudaUnavailableReason } from '../src/node/native.js';
import { registerCudaSuite } from './cuda_suite.js';
import { DEV_ADDON, loadDevAddon } from './support/dev_addon.js';

if (!process.env.MARBLE_ADDON && existsSync(DEV_ADDON) && loadDevAddon().cudaDevices().built) process.env.MARBLE_ADDON = DEV_ADDON;
const reason = cudaUnavailableReason();
if (reason !== null) test('cuda parity suites', (t) => t.skip(`no CUDA device: ${reason}`));
else if (!process.env.MARBLE_ADDON)
  test('cuda parity suites', () => {
    throw new Error(`a CUDA device is here, but ${DEV_ADDON} (with CUDA) is not: MARBLE_DEV=ON MARBLE_DEV_CUDA=ON npm run build:addon`);
  });
else registerCudaSuite({ emulated: false });

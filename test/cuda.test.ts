// The CUDA backend against the references on a machine with a GPU (the suite
// is test/cuda_suite.ts); one skipped test naming the reason everywhere else.
// test/cuda_emulation.test.ts runs the same suite with the kernels emulated.
import '../src/node/host.js';
import { test } from 'node:test';

import { cudaUnavailableReason } from '../src/node/native.js';
import { registerCudaSuite } from './cuda_suite.js';

const reason = cudaUnavailableReason();
if (reason !== null) test('cuda parity suites', (t) => t.skip(`no CUDA device: ${reason}`));
else registerCudaSuite({ emulated: false });

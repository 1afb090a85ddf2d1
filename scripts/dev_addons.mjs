// Builds the development addons (build/dev/marble_dev.node: the CUDA
// self-test and benchmark hooks; build/dev/marble_emulated.node: the CUDA
// kernels emulated on the CPU) that the tests and bench/ load. Never part of
// a user's install. Configures with MARBLE_DEV=ON (a plain `cmake-js compile`
// would keep the cached configuration of the product-only build), then
// builds: incremental, so a few seconds when nothing changed; the product
// addon is brought up to date too.
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(import.meta.url);
const cmakeJs = path.join(path.dirname(require.resolve('cmake-js/package.json')), 'bin', 'cmake-js');
for (const step of [['configure', '--CDMARBLE_DEV=ON'], ['build']]) {
  const run = spawnSync(process.execPath, [cmakeJs, ...step, '--out', 'build'], {
    cwd: root,
    stdio: ['ignore', process.env.MARBLE_BUILD_VERBOSE ? 'inherit' : 'ignore', 'inherit'],
    env: { ...process.env, MARBLE_DEV: 'ON' },
  });
  if (run.status !== 0) {
    console.error(`scripts/dev_addons.mjs: cmake-js ${step[0]} exited ${run.status ?? run.signal}; rerun with MARBLE_BUILD_VERBOSE=1`);
    process.exit(1);
  }
}

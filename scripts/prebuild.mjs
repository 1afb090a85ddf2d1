// Puts the product addon where a package install finds it without building:
// prebuilds/<platform>-<arch>/marble.napi.glibc.node (node-gyp-build's naming:
// N-API, any Node version; glibc on Linux). `npm run prebuild` builds it
// first (cmake-js, the product target only, CUDA when nvcc is found);
// `--reuse` (npm pack's prepack) copies the addon already in build/Release;
// `--clean` (postpack) removes it again.
import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(import.meta.url);
const built = path.join(root, 'build', 'Release', 'marble.node');

// postpack: the prebuild was for the tarball; a checkout builds from source.
if (process.argv.includes('--clean')) {
  rmSync(path.join(root, 'prebuilds'), { recursive: true, force: true });
  process.exit(0);
}

if (!process.argv.includes('--reuse') || !existsSync(built)) {
  const cmakeJs = path.join(path.dirname(require.resolve('cmake-js/package.json')), 'bin', 'cmake-js');
  const build = spawnSync(process.execPath, [cmakeJs, 'compile', '--out', 'build'], {
    cwd: root,
    stdio: 'inherit',
    env: { ...process.env, MARBLE_DEV: 'OFF' },
  });
  if (build.status !== 0) process.exit(build.status ?? 1);
}
const libc = process.platform === 'linux' ? (process.report?.getReport().header.glibcVersionRuntime ? '.glibc' : '.musl') : '';
const dir = path.join(root, 'prebuilds', `${process.platform}-${process.arch}`);
mkdirSync(dir, { recursive: true });
const target = path.join(dir, `marble.napi${libc}.node`);
copyFileSync(built, target);
const { cudaDevices } = require(target);
console.log(`${path.relative(root, target)}: ${cudaDevices().built ? 'with' : 'without'} CUDA`);

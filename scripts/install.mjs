// npm's install step for marble-diffusion. It never fails the install:
//   1. a prebuilt addon for this platform (prebuilds/<platform>-<arch>/) that
//      loads: nothing to do;
//   2. else cmake and a C++ compiler: build the addon from source (cmake-js);
//   3. else, or if that build fails: one line saying marble will use its
//      WebAssembly backend, and how to build the addon later.
// `npm rebuild marble-diffusion --build-from-source` (or MARBLE_BUILD_FROM_SOURCE=1)
// skips step 1. What happened is written to build/install.json for `marble info`.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(import.meta.url);
const platform = `${process.platform}-${process.arch}`;
const fromSource = process.env.npm_config_build_from_source === 'true' || process.env.MARBLE_BUILD_FROM_SOURCE === '1';
const HOW_TO_BUILD = 'to build it: install cmake (3.18+) and a C++17 compiler, then `npm rebuild marble-diffusion --build-from-source`';

function record(status) {
  mkdirSync(path.join(root, 'build'), { recursive: true });
  writeFileSync(path.join(root, 'build', 'install.json'), `${JSON.stringify({ ...status, platform, at: new Date().toISOString() })}\n`);
}

function loads(file) {
  try {
    require(file);
    return null;
  } catch (e) {
    return e.message.split('\n')[0];
  }
}

function prebuild() {
  const dir = path.join(root, 'prebuilds', platform);
  if (!existsSync(dir)) return null;
  const file = readdirSync(dir).find((name) => name.endsWith('.node'));
  return file ? path.join(dir, file) : null;
}

function onPath(command) {
  return spawnSync(command, ['--version'], { stdio: 'ignore' }).status === 0;
}

function wasmOnly(reason) {
  record({ addon: 'none', reason });
  console.log(`marble: no native addon for ${platform} (${reason}); marble will use its WebAssembly backend; ${HOW_TO_BUILD}`);
}

const prebuilt = fromSource ? null : prebuild();
const prebuiltError = prebuilt ? loads(prebuilt) : null;
if (prebuilt && !prebuiltError) {
  record({ addon: 'prebuild', file: path.relative(root, prebuilt) });
} else if (!onPath('cmake')) {
  wasmOnly(prebuiltError ? `the prebuilt addon does not load here: ${prebuiltError}; and cmake is not installed` : 'no prebuilt addon, and cmake is not installed');
} else if (!onPath(process.env.CXX || 'c++')) {
  wasmOnly('no prebuilt addon, and no C++ compiler (c++, or $CXX)');
} else {
  const cuda = process.env.MARBLE_CUDA === 'OFF' ? 'without CUDA' : 'with CUDA when nvcc is found (several minutes; MARBLE_CUDA=OFF skips it)';
  console.log(`marble: building the native addon from source for ${platform}, ${cuda}...`);
  const started = Date.now();
  const cmakeJs = path.join(path.dirname(require.resolve('cmake-js/package.json')), 'bin', 'cmake-js');
  const build = spawnSync(process.execPath, [cmakeJs, 'compile', '--out', 'build'], { cwd: root, stdio: ['ignore', 'inherit', 'inherit'] });
  const built = path.join(root, 'build', 'Release', 'marble.node');
  if (build.status === 0 && existsSync(built)) {
    record({ addon: 'source build', file: 'build/Release/marble.node', seconds: Math.round((Date.now() - started) / 1000) });
    console.log(`marble: built build/Release/marble.node in ${Math.round((Date.now() - started) / 1000)} s`);
  } else {
    wasmOnly(`the source build failed (cmake-js exited ${build.status ?? build.signal})`);
  }
}

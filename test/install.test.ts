// Installing the package as a user does: `npm pack`, then the tarball into an
// empty project, three ways, and `marble sample` in each (and, in the first,
// `marble eval` without TensorFlow.js):
//   1. with the prebuilt addon, and a PATH with node and sh alone (no cmake,
//      no compiler: none can be invoked);
//   2. without the prebuild, with cmake: the addon is built from source;
//   3. without the prebuild and without cmake: the install still succeeds,
//      sampling runs on wasm, and `marble info` says why there is no addon.
// The dependencies come from the npm registry, as for a user.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, realpathSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';

import { packageRoot } from '../src/node/native.js';

const root = packageRoot();
let work: string;
let withPrebuild: string;
let withoutPrebuild: string;
let nodeOnlyPath: string; // a PATH with node and sh, and nothing else
const npmCli = realpathSync(execFileSync('sh', ['-c', 'command -v npm'], { encoding: 'utf8' }).trim());

function npm(args: string[], cwd: string, env: NodeJS.ProcessEnv = {}): { stdout: string; stderr: string; seconds: number } {
  const started = Date.now();
  const result = spawnSync(process.execPath, [npmCli, ...args], { cwd, encoding: 'utf8', env: { ...process.env, ...env }, timeout: 600_000 });
  if (result.status !== 0) throw new Error(`npm ${args.join(' ')} exited ${result.status}\n${result.stderr}\n${result.stdout}`);
  return { stdout: result.stdout, stderr: result.stderr, seconds: (Date.now() - started) / 1000 };
}

async function project(name: string): Promise<string> {
  const dir = path.join(work, name);
  await mkdir(dir);
  await writeFile(path.join(dir, 'package.json'), JSON.stringify({ name, version: '1.0.0', private: true }));
  return dir;
}

/** `marble sample` from the installed package: a PNG of 4 digits. */
async function sampleWorks(dir: string, env: NodeJS.ProcessEnv, backend?: string): Promise<void> {
  const cli = path.join(dir, 'node_modules', 'marble-diffusion', 'dist', 'src', 'cli', 'main.js');
  const args = [cli, 'sample', '--steps', '5', '--batch', '4', '--out', 'digits.png', ...(backend ? ['--backend', backend] : [])];
  execFileSync(process.execPath, args, { cwd: dir, env: { ...process.env, ...env }, stdio: 'pipe' });
  const png = await readFile(path.join(dir, 'digits.png'));
  assert.deepEqual([...png.subarray(1, 4)], [0x50, 0x4e, 0x47], 'a PNG');
}

function info(dir: string, env: NodeJS.ProcessEnv): string {
  const cli = path.join(dir, 'node_modules', 'marble-diffusion', 'dist', 'src', 'cli', 'main.js');
  return execFileSync(process.execPath, [cli, 'info'], { cwd: dir, env: { ...process.env, ...env }, encoding: 'utf8' });
}

before(async () => {
  work = await mkdtemp(path.join(tmpdir(), 'marble-install-'));
  const packed = npm(['pack', '--pack-destination', work, '--json'], root, { MARBLE_DEV: 'OFF' });
  const [{ filename, size, unpackedSize }] = JSON.parse(packed.stdout.slice(packed.stdout.indexOf('['))) as { filename: string; size: number; unpackedSize: number }[];
  withPrebuild = path.join(work, filename);
  console.log(`# tarball ${filename}: ${(size / 2 ** 20).toFixed(1)} MiB, unpacked ${(unpackedSize / 2 ** 20).toFixed(1)} MiB`);
  // The same package without its prebuild, as on a platform it has none for.
  const unpacked = path.join(work, 'unpacked');
  await mkdir(unpacked);
  execFileSync('tar', ['-xzf', withPrebuild, '-C', unpacked]);
  assert.ok(existsSync(path.join(unpacked, 'package', 'prebuilds', `${process.platform}-${process.arch}`)), 'the tarball carries the prebuilt addon');
  await rm(path.join(unpacked, 'package', 'prebuilds'), { recursive: true });
  withoutPrebuild = path.join(work, 'no-prebuild.tgz');
  execFileSync('tar', ['-czf', withoutPrebuild, '-C', unpacked, 'package']);
  nodeOnlyPath = path.join(work, 'node-only-bin');
  await mkdir(nodeOnlyPath);
  await symlink(process.execPath, path.join(nodeOnlyPath, 'node'));
  await symlink('/bin/sh', path.join(nodeOnlyPath, 'sh')); // npm runs install scripts with sh
});

after(async () => {
  if (work) await rm(work, { recursive: true, force: true });
});

test('with the prebuilt addon and no toolchain on the PATH: installs without compiling, and samples on the native addon', async () => {
  const dir = await project('with-prebuild');
  const env = { PATH: nodeOnlyPath };
  const { seconds } = npm(['install', withPrebuild, '--no-audit', '--no-fund'], dir, env);
  console.log(`# install with the prebuild: ${seconds.toFixed(1)} s`);
  const installed = path.join(dir, 'node_modules', 'marble-diffusion');
  const record = JSON.parse(await readFile(path.join(installed, 'build', 'install.json'), 'utf8')) as { addon: string };
  assert.equal(record.addon, 'prebuild');
  assert.ok(!existsSync(path.join(installed, 'build', 'Release')), 'nothing was compiled');
  assert.match(info(dir, env), /native addon\s+prebuild: .*prebuilds/);
  await sampleWorks(dir, env, 'cpu');
  // TensorFlow.js is a development dependency only: a user's `marble eval` says what to install
  // (before any sampling), and runs without the CNN rows when asked to
  const cli = path.join(installed, 'dist', 'src', 'cli', 'main.js');
  const evalRun = spawnSync(process.execPath, [cli, 'eval', '--samples', '10', '--steps', '1', '--batch', '10', '--backend', 'cpu'], { cwd: dir, env: { ...process.env, ...env }, encoding: 'utf8' });
  assert.equal(evalRun.status, 1, evalRun.stderr);
  assert.match(evalRun.stderr, /the MNIST classifier needs TensorFlow\.js, which marble does not install: npm install @tensorflow\/tfjs-core@4 @tensorflow\/tfjs-backend-wasm@4/);
  assert.ok(existsSync(path.join(installed, 'models', 'mnist-classifier', 'model.safetensors')), 'the classifier ships in the package');
});

test('without a prebuild, with cmake and a compiler: the addon is built from source', async () => {
  const dir = await project('source-build');
  // MARBLE_CUDA=OFF: the CPU addon (the CUDA kernels would take minutes on 2 cores).
  const { stdout, seconds } = npm(['install', withoutPrebuild, '--no-audit', '--no-fund', '--foreground-scripts'], dir, { MARBLE_CUDA: 'OFF' });
  console.log(`# install building the CPU addon from source: ${seconds.toFixed(1)} s`);
  assert.match(stdout, /building the native addon from source/);
  const installed = path.join(dir, 'node_modules', 'marble-diffusion');
  assert.ok((await stat(path.join(installed, 'build', 'Release', 'marble.node'))).size > 0);
  assert.match(info(dir, {}), /native addon\s+source build: /);
  await sampleWorks(dir, {}, 'cpu');
});

test('without a prebuild and without cmake: the install succeeds, sampling runs on wasm, and marble info says why', async () => {
  const dir = await project('wasm-only');
  const env = { PATH: nodeOnlyPath };
  const { stdout } = npm(['install', withoutPrebuild, '--no-audit', '--no-fund', '--foreground-scripts'], dir, env);
  assert.match(stdout, /marble: no native addon for \S+ \(no prebuilt addon, and cmake is not installed\); marble will use its WebAssembly backend/);
  const text = info(dir, env);
  assert.match(text, /native addon\s+none: no prebuilt addon, and cmake is not installed/);
  assert.match(text, /backend wasm\s+available/);
  await sampleWorks(dir, env);
});

// The JavaScript runtimes the runtime tests start (real binaries from npm and
// Debian), a scratch project that installs this package as a user's would
// (node_modules/marble-diffusion -> the package), and a child-process runner.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, statSync } from 'node:fs';
import { mkdir, mkdtemp, symlink, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';

import { packageRoot } from '../../src/node/native.js';

const root = packageRoot();

export const CHROMIUM = '/usr/bin/chromium';
export const CHROMIUM_ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

export const runtimeBinaries = {
  deno: path.join(root, 'node_modules', '.bin', 'deno'),
  // The bun package's postinstall moves the platform binary into bun/bin when install scripts run.
  bun: [path.join(root, 'node_modules', 'bun', 'bin', 'bun.exe'), path.join(root, 'node_modules', '@oven', 'bun-linux-x64', 'bin', 'bun')].find(
    (file) => existsSync(file) && statSync(file).size > 1 << 20,
  ) ?? path.join(root, 'node_modules', '@oven', 'bun-linux-x64', 'bin', 'bun'),
  workerd: path.join(root, 'node_modules', '.bin', 'workerd'),
  chromium: CHROMIUM,
};

const INSTALL: Record<keyof typeof runtimeBinaries, string> = {
  deno: 'npm ci installs the deno package',
  bun: 'npm ci installs the bun package (@oven/bun-linux-x64)',
  workerd: 'npm ci installs the workerd package',
  chromium: 'apt-get install -y --no-install-recommends chromium chromium-headless-shell',
};

/** The runtime's binary, or (under CI) a failure that says how to install it; else a skip and null. */
export function requireRuntime(t: { skip(message: string): void }, name: keyof typeof runtimeBinaries): string | null {
  const file = runtimeBinaries[name];
  if (existsSync(file)) return file;
  if (process.env.CI) assert.fail(`${file} is missing: ${INSTALL[name]}`);
  t.skip(`${file} is missing (${INSTALL[name]})`);
  return null;
}

/** A scratch folder with package.json and node_modules/marble-diffusion -> this package. */
export async function scratchProject(prefix: string): Promise<string> {
  const project = await mkdtemp(path.join(tmpdir(), prefix));
  await mkdir(path.join(project, 'node_modules'));
  await symlink(root, path.join(project, 'node_modules', 'marble-diffusion'), 'dir');
  await writeFile(path.join(project, 'package.json'), JSON.stringify({ type: 'module', private: true }));
  return project;
}

export function run(
  command: string,
  args: string[],
  options: { cwd?: string; env?: NodeJS.ProcessEnv; timeoutMs?: number } = {},
): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { cwd: options.cwd, env: { ...process.env, ...options.env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d));
    child.stderr.on('data', (d: Buffer) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 120_000);
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      if (code === 0) resolve(stdout);
      else reject(new Error(`${path.basename(command)} ${args.join(' ')} exited ${code ?? signal}\n${stderr.slice(-4000)}\n${stdout.slice(-2000)}`));
    });
  });
}

/** A free loopback port. */
export function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const probe = createServer();
    probe.listen(0, '127.0.0.1', () => {
      const { port } = probe.address() as AddressInfo;
      probe.close(() => resolve(port));
    });
  });
}

/** Starts `workerd serve CONFIG` on a free loopback port and waits until it answers. */
export async function startWorkerd(workerd: string, config: string): Promise<{ url: string; log(): string; stop(): void }> {
  const port = await freePort();
  const probePath = '/';
  const child = spawn(workerd, ['serve', config, '--socket-addr', `http=127.0.0.1:${port}`], { stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  child.stderr.on('data', (d: Buffer) => (log += d));
  child.stdout.on('data', (d: Buffer) => (log += d));
  for (let attempt = 0; attempt < 100; attempt++) {
    const up = await fetch(`http://127.0.0.1:${port}${probePath}`, { method: 'HEAD' }).then(
      () => true,
      () => false,
    );
    if (up) return { url: `http://127.0.0.1:${port}/`, log: () => log, stop: () => child.kill('SIGKILL') };
    if (child.exitCode !== null) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  child.kill('SIGKILL');
  throw new Error(`workerd did not start: ${log}`);
}

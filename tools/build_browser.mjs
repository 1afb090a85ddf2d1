// Builds dist/browser/: the web entry (dist/src/web/index.js) as one ES
// module with its dependencies inlined, and its pool worker beside it, so a
// plain static page can `import { loadPipeline } from '.../dist/browser/marble.js'`
// without a bundler. The .wasm files and the embedded model stay where they
// are in the package (../../wasm/dist, ../../models), found through
// import.meta.url. platform 'browser' makes any Node built-in reaching the
// core a build error, which is the runtime-neutrality check of the core.
import { build } from 'esbuild';
import { statSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const outdir = path.join(root, 'dist', 'browser');

const result = await build({
  absWorkingDir: root,
  entryPoints: {
    marble: 'dist/src/web/index.js',
    wasm_worker_web: 'dist/src/web/wasm_worker_web.js',
  },
  outdir,
  bundle: true,
  format: 'esm',
  platform: 'browser',
  target: 'es2022',
  minify: true,
  sourcemap: true,
  legalComments: 'eof',
  define: { MARBLE_BUNDLE_ROOT: JSON.stringify('../../') },
  logLevel: 'warning',
  metafile: true,
});
if (result.errors.length) process.exit(1);
if (!process.env.CI || process.env.MARBLE_BUILD_VERBOSE)
  for (const name of ['marble.js', 'wasm_worker_web.js'])
    console.log(`dist/browser/${name}: ${(statSync(path.join(outdir, name)).size / 1024).toFixed(1)} KiB`);

// Where the package's own files (wasm/dist/*.wasm, models/mnist/) are, as
// URLs relative to this module: dist/src/web/ is three folders below the
// package root. The browser bundle (dist/browser/, tools/build_browser.mjs)
// is two, and esbuild's `define` tells it so through MARBLE_BUNDLE_ROOT.
declare const MARBLE_BUNDLE_ROOT: string | undefined;

const ROOT = typeof MARBLE_BUNDLE_ROOT === 'string' ? MARBLE_BUNDLE_ROOT : '../../../';

/** A file of the package, e.g. packageUrl('wasm/dist/marble.wasm'). */
export function packageUrl(file: string): URL {
  return new URL(`${ROOT}${file}`, import.meta.url);
}

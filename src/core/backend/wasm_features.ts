// Which wasm build this runtime should run: plain SIMD128 by default, relaxed
// SIMD (f32x4.relaxed_madd in the GEMM micro-kernel, wasm/build.sh's
// *-relaxed.wasm) when asked for and a module using it validates. Chrome 114+, Firefox 120+ and
// Node 22+ have relaxed SIMD; Node 20 has it behind
// --experimental-wasm-relaxed-simd. No Node built-ins: the browser entry
// (src/web/wasm.ts) uses this too.

// (module (func (result v128) v128.const 0 v128.const 0 v128.const 0 f32x4.relaxed_madd))
const RELAXED_MADD_PROBE = new Uint8Array([
  0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, // magic, version
  0x01, 0x05, 0x01, 0x60, 0x00, 0x01, 0x7b, // type section: () -> v128
  0x03, 0x02, 0x01, 0x00, // function section: one function of type 0
  0x0a, 0x3d, 0x01, 0x3b, 0x00, // code section: one body of 59 bytes, no locals
  0xfd, 0x0c, ...new Array<number>(16).fill(0), // v128.const 0
  0xfd, 0x0c, ...new Array<number>(16).fill(0),
  0xfd, 0x0c, ...new Array<number>(16).fill(0),
  0xfd, 0x85, 0x02, // f32x4.relaxed_madd (0xfd 0x105)
  0x0b, // end
]);

let relaxed: boolean | null = null;

/** Whether this runtime runs relaxed SIMD. */
export function relaxedSimdSupported(): boolean {
  if (relaxed === null) {
    try {
      relaxed = typeof WebAssembly === 'object' && WebAssembly.validate(RELAXED_MADD_PROBE);
    } catch {
      relaxed = false;
    }
  }
  return relaxed;
}

/**
 * The file name of the build to run: `marble` or `marble-threads`, with
 * `-relaxed` when relaxed SIMD is asked for and the runtime has it. Plain
 * SIMD128 is the default: relaxed_madd may or may not fuse per engine and
 * CPU, so only the plain builds give the same bits in every runtime.
 */
export function wasmBuildFile(kind: 'single' | 'threads', relaxed = false): string {
  const base = kind === 'single' ? 'marble' : 'marble-threads';
  return `${base}${relaxed && relaxedSimdSupported() ? '-relaxed' : ''}.wasm`;
}

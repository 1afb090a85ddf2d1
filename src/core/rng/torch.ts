// A random generator that reproduces, bit for bit, PyTorch's CPU generator:
//
//   g = torch.Generator('cpu').manual_seed(seed)
//   torch.randn(n, generator=g)            // float32, called any number of times
//
// so that noise drawn here equals the noise a diffusers pipeline draws on CPU.
//
// How torch does it (ATen, CPUGeneratorImpl + DistributionKernels):
// - The engine is mt19937 seeded with the low 32 bits of the 64-bit seed.
//   random() is one 32-bit draw; random64() is two, the first as high word.
// - randn of n >= 16 contiguous floats (normal_fill_AVX2; the AVX512 build uses
//   the same code) first draws n uniforms u = (random() & 0xffffff) * 2^-24,
//   then turns each block of 16 into normals with Box-Muller in float32:
//     r = sqrt(-2 log(1 - u[j])), theta = 2pi * u[j+8],
//     out[j] = r cos(theta), out[j+8] = r sin(theta)   (j = 0..7).
//   If n % 16 != 0, it draws 16 fresh uniforms into the last 16 slots
//   (overwriting some finished normals) and transforms them as one more block.
// - randn of n < 16 draws element by element from normal_distribution<double>:
//   u1, u2 are 53-bit doubles from random64(), r = sqrt(-2 log1p(-u2)),
//   theta = 2pi u1; it returns r cos(theta) and caches r sin(theta) in the
//   generator for the next scalar normal draw (even in a later call).
//   Each double is rounded to float32 on store.

import { Mt19937, type Mt19937State } from './mt19937.js';
import { logCephesF32, sincosCephesF32, type SinCos } from './avx_mathfun.js';

const f = Math.fround;
const TWO_PI_F32 = f(2 * Math.PI);
const TWO_POW_24 = 16777216;
const TWO_POW_32 = 4294967296;
const TWO_POW_53 = 9007199254740992;
const UINT64_MAX = (1n << 64n) - 1n;
const INT64_MIN = -(1n << 63n);

/** JSON-serializable generator state, for checkpoint and resume. */
export interface TorchGeneratorState {
  /** The seed given to the constructor, as a decimal uint64 string. */
  seed: string;
  mt19937: Mt19937State;
  /** Cached second Box-Muller value of the scalar (n < 16) path, or null. */
  nextDoubleNormal: number | null;
}

/**
 * Normalize a seed the way torch.Generator.manual_seed does: any integer in
 * [-2^63, 2^64); negative values wrap to their two's-complement uint64.
 */
function toUint64Seed(seed: number | bigint): bigint {
  let s: bigint;
  if (typeof seed === 'bigint') {
    s = seed;
  } else {
    if (!Number.isSafeInteger(seed)) {
      throw new RangeError(`seed must be an integer (a bigint above 2^53), got ${seed}`);
    }
    s = BigInt(seed);
  }
  if (s < INT64_MIN || s > UINT64_MAX) {
    throw new RangeError(`seed must be in [-2^63, 2^64), got ${s}`);
  }
  return s < 0n ? s + (1n << 64n) : s;
}

/**
 * normal_fill for n >= 16 done elsewhere (the Node addon's, about 40x the
 * JavaScript's speed): fills `out` from the twister's 624 words starting at
 * `index`, advancing them in place exactly as normalFill below would, and
 * returns the new index. It must give normalFill's bits (test/torch_rng.test.ts).
 */
export type NormalFillKernel = (words: Uint32Array, index: number, out: Float32Array) => number;
let normalFillKernel: NormalFillKernel | null = null;

/** Sets (or, with null, clears) the kernel every TorchGenerator's randn uses from now on. */
export function useNormalFillKernel(kernel: NormalFillKernel | null): void {
  normalFillKernel = kernel;
}

export class TorchGenerator {
  private seed: bigint;
  private readonly engine: Mt19937;
  private nextDoubleNormal: number | null = null;
  private readonly sc: SinCos = { sin: 0, cos: 0 };

  constructor(seed: number | bigint) {
    this.seed = toUint64Seed(seed);
    // at::mt19937 keeps only the low 32 bits of the seed for its state.
    this.engine = new Mt19937(Number(this.seed & 0xffffffffn));
  }

  /** The seed as torch reports it from initial_seed(): a uint64. */
  initialSeed(): bigint {
    return this.seed;
  }

  /** Equivalent of torch.randn(n, generator=this) on CPU, float32. */
  randn(n: number): Float32Array {
    if (!Number.isSafeInteger(n) || n < 0) {
      throw new RangeError(`randn size must be a non-negative integer, got ${n}`);
    }
    const out = new Float32Array(n);
    if (n >= 16) {
      const kernel = normalFillKernel;
      if (kernel) this.engine.drawWith((words, index) => kernel(words, index, out));
      else this.normalFill(out);
    }
    else for (let i = 0; i < n; i++) out[i] = this.normalDouble();
    return out;
  }

  getState(): TorchGeneratorState {
    return {
      seed: this.seed.toString(),
      mt19937: this.engine.getState(),
      nextDoubleNormal: this.nextDoubleNormal,
    };
  }

  setState(state: TorchGeneratorState): void {
    const next = state.nextDoubleNormal;
    if (next !== null && typeof next !== 'number') {
      throw new RangeError('nextDoubleNormal must be a number or null');
    }
    if (typeof state.seed !== 'string' || !/^\d+$/.test(state.seed)) {
      throw new RangeError('seed must be a decimal uint64 string');
    }
    const seed = toUint64Seed(BigInt(state.seed));
    this.engine.setState(state.mt19937); // validates before it changes anything
    this.seed = seed;
    this.nextDoubleNormal = next;
  }

  /** at::uniform_real_distribution<float>(0, 1): 24 random bits, exact. */
  private uniformFloat(): number {
    return (this.engine.nextUint32() & 0xffffff) / TWO_POW_24;
  }

  /** at::uniform_real_distribution<double>(0, 1): low 53 bits of random64(). */
  private uniformDouble(): number {
    const hi = this.engine.nextUint32();
    const lo = this.engine.nextUint32();
    return ((hi & 0x1fffff) * TWO_POW_32 + lo) / TWO_POW_53;
  }

  /** at::normal_distribution<double>(0, 1) with the generator's cache. */
  private normalDouble(): number {
    if (this.nextDoubleNormal !== null) {
      const cached = this.nextDoubleNormal;
      this.nextDoubleNormal = null;
      return cached;
    }
    const u1 = this.uniformDouble();
    const u2 = this.uniformDouble();
    const r = Math.sqrt(-2 * Math.log1p(-u2));
    const theta = 2 * Math.PI * u1;
    this.nextDoubleNormal = r * Math.sin(theta);
    return r * Math.cos(theta);
  }

  /** normal_fill_AVX2 with mean 0, std 1. `data.length` must be >= 16. */
  private normalFill(data: Float32Array): void {
    const n = data.length;
    for (let i = 0; i < n; i++) data[i] = this.uniformFloat();
    for (let i = 0; i + 16 <= n; i += 16) this.normalFill16(data, i);
    if (n % 16 !== 0) {
      const start = n - 16;
      for (let i = 0; i < 16; i++) data[start + i] = this.uniformFloat();
      this.normalFill16(data, start);
    }
  }

  /** Box-Muller on data[at .. at+16) in place, in float32 as the AVX2 code. */
  private normalFill16(data: Float32Array, at: number): void {
    const sc = this.sc;
    for (let j = 0; j < 8; j++) {
      const u1 = f(1 - data[at + j]); // [0, 1) -> (0, 1] for the log
      const u2 = data[at + j + 8];
      const radius = f(Math.sqrt(f(-2 * logCephesF32(u1))));
      const theta = f(TWO_PI_F32 * u2);
      sincosCephesF32(theta, sc);
      // _mm256_fmadd_ps(n, std=1, mean=0) is n + 0: exact, but -0 becomes +0.
      data[at + j] = f(radius * sc.cos) + 0;
      data[at + j + 8] = f(radius * sc.sin) + 0;
    }
  }
}

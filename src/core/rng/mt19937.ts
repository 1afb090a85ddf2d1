// MT19937, the 32-bit Mersenne Twister, seeded the way PyTorch's at::mt19937
// does it (ATen/core/MT19937RNGEngine.h): the seed's low 32 bits go through
// the reference init_genrand recurrence. Its output is the standard mt19937
// sequence, identical to std::mt19937 for the same 32-bit seed.

const N = 624;
const M = 397;
const MATRIX_A = 0x9908b0df;
const UPPER_MASK = 0x80000000;
const LOWER_MASK = 0x7fffffff;

/** JSON-serializable snapshot of an Mt19937. */
export interface Mt19937State {
  /** The 624 words of the twister state. */
  state: number[];
  /** Index of the next word to temper and return; 624 means "twist first". */
  index: number;
}

export class Mt19937 {
  private readonly mt = new Uint32Array(N);
  private index = N;

  /** `seed32` must be an integer in [0, 2^32). */
  constructor(seed32: number) {
    this.seed(seed32);
  }

  seed(seed32: number): void {
    const mt = this.mt;
    mt[0] = seed32 >>> 0;
    for (let i = 1; i < N; i++) {
      const prev = mt[i - 1] ^ (mt[i - 1] >>> 30);
      // 1812433253 * prev + i modulo 2^32; Math.imul keeps the product exact.
      mt[i] = (Math.imul(1812433253, prev) + i) >>> 0;
    }
    this.index = N;
  }

  /** Next 32-bit output, as an unsigned integer. */
  nextUint32(): number {
    if (this.index >= N) this.twist();
    let y = this.mt[this.index++];
    y ^= y >>> 11;
    y ^= (y << 7) & 0x9d2c5680;
    y ^= (y << 15) & 0xefc60000;
    y ^= y >>> 18;
    return y >>> 0;
  }

  /**
   * Lets `kernel` draw from the twister in place: it gets the 624 words and
   * the index of the next one, and returns the index after its draws (a
   * native kernel drawing exactly as nextUint32 would: torch.ts).
   */
  drawWith(kernel: (words: Uint32Array, index: number) => number): void {
    this.index = kernel(this.mt, this.index);
  }

  getState(): Mt19937State {
    return { state: Array.from(this.mt), index: this.index };
  }

  setState(s: Mt19937State): void {
    if (!Array.isArray(s.state) || s.state.length !== N) {
      throw new RangeError(`mt19937 state must hold ${N} words`);
    }
    if (!Number.isInteger(s.index) || s.index < 0 || s.index > N) {
      throw new RangeError(`mt19937 index must be an integer in [0, ${N}]`);
    }
    for (let i = 0; i < N; i++) {
      const w = s.state[i];
      if (!Number.isInteger(w) || w < 0 || w > 0xffffffff) {
        throw new RangeError(`mt19937 state word ${i} is not a uint32`);
      }
      this.mt[i] = w;
    }
    this.index = s.index;
  }

  private twist(): void {
    const mt = this.mt;
    for (let i = 0; i < N; i++) {
      const y = (mt[i] & UPPER_MASK) | (mt[(i + 1) % N] & LOWER_MASK);
      let v = mt[(i + M) % N] ^ (y >>> 1);
      if (y & 1) v ^= MATRIX_A;
      mt[i] = v >>> 0;
    }
    this.index = 0;
  }
}

// Seeded randomness for data pipelines: xoshiro128** streams keyed by
// (seed, stream ids). Keying each epoch's shuffle and each image's flip by
// their indices, instead of drawing them from one running stream, makes a
// data loader's whole state two integers (epoch, position), so resuming is
// exact and cheap.

/** splitmix32-style finalizer: a well-mixed 32-bit hash step. */
function mix32(h: number): number {
  h = Math.imul(h ^ (h >>> 16), 0x7feb352d);
  h = Math.imul(h ^ (h >>> 15), 0x846ca68b);
  return (h ^ (h >>> 16)) >>> 0;
}

/** Hashes a seed (any integer below 2^64) and stream ids to 32 bits. */
export function hashKey(seed: number | bigint, ...ids: number[]): number {
  const s = BigInt(seed);
  let h = mix32(Number(s & 0xffffffffn) ^ 0x9e3779b9);
  h = mix32(h ^ Number((s >> 32n) & 0xffffffffn));
  for (const id of ids) h = mix32((h + 0x9e3779b9 + (id >>> 0)) >>> 0) ^ mix32(Math.floor(id / 4294967296));
  return h >>> 0;
}

export class SeededRandom {
  private readonly s = new Uint32Array(4);

  constructor(seed: number | bigint, ...ids: number[]) {
    let h = hashKey(seed, ...ids);
    for (let i = 0; i < 4; i++) {
      h = (h + 0x9e3779b9) >>> 0;
      this.s[i] = mix32(h);
    }
    if ((this.s[0] | this.s[1] | this.s[2] | this.s[3]) === 0) this.s[0] = 1; // the all-zero state is a fixed point
  }

  /** Next uniform 32-bit integer (xoshiro128**). */
  nextUint32(): number {
    const s = this.s;
    const result = Math.imul(rotl(Math.imul(s[1], 5) >>> 0, 7), 9) >>> 0;
    const t = s[1] << 9;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 11);
    return result;
  }

  /** Uniform in [0, 1), 32 bits of resolution. */
  float(): number {
    return this.nextUint32() / 4294967296;
  }

  /** Uniform integer in [0, n), unbiased (rejection of the short last bucket). */
  below(n: number): number {
    if (!Number.isInteger(n) || n < 1 || n > 4294967296) throw new RangeError(`below(n) needs an integer n in [1, 2^32], got ${n}`);
    const limit = 4294967296 - (4294967296 % n);
    for (;;) {
      const x = this.nextUint32();
      if (x < limit) return x % n;
    }
  }

  /** A Fisher-Yates permutation of 0 .. n-1. */
  permutation(n: number): Uint32Array {
    const p = new Uint32Array(n);
    for (let i = 0; i < n; i++) p[i] = i;
    for (let i = n - 1; i > 0; i--) {
      const j = this.below(i + 1);
      const tmp = p[i];
      p[i] = p[j];
      p[j] = tmp;
    }
    return p;
  }
}

function rotl(x: number, k: number): number {
  return ((x << k) | (x >>> (32 - k))) >>> 0;
}

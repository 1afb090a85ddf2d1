// Batches from a Dataset: a fresh seeded shuffle every epoch and an optional
// random horizontal flip, both keyed by (seed, epoch[, position]) so the
// loader's state is just (epoch, position) and a resumed run sees exactly
// the batches the uninterrupted run would have. Batches are always full:
// the last one of an epoch continues into the next epoch's order.
import { InputError } from '../core/errors.js';
import type { Dataset } from './dataset.js';
import { hashKey, SeededRandom } from './random.js';
import { flipHorizontal } from './resample.js';

export interface DataLoaderOptions {
  batchSize: number;
  /** Default 0. */
  seed?: number | bigint;
  /** Shuffle every epoch (default true); false keeps dataset order. */
  shuffle?: boolean;
  /** Mirror each image with probability 1/2 (default false). */
  randomFlip?: boolean;
}

export interface Batch {
  /** NCHW float32 in [-1, 1]. */
  data: Float32Array;
  shape: [number, number, number, number];
  /** One label per image for labeled datasets, else null. */
  labels: number[] | null;
  /** Dataset indices of the images, in batch order. */
  indices: number[];
}

/** Where a loader is: the next image is position `position` of epoch `epoch`'s order. */
export interface DataLoaderState {
  epoch: number;
  position: number;
}

const FLIP_STREAM = 0x666c6970; // "flip"
const SHUFFLE_STREAM = 0x73687566; // "shuf"

export class DataLoader {
  readonly dataset: Dataset;
  readonly batchSize: number;
  private readonly seed: bigint;
  private readonly shuffle: boolean;
  private readonly randomFlip: boolean;
  private epoch = 0;
  private position = 0;
  private order: Uint32Array | null = null;
  private orderEpoch = -1;

  constructor(dataset: Dataset, options: DataLoaderOptions) {
    if (dataset.length < 1) throw new InputError('the dataset is empty');
    if (!Number.isInteger(options.batchSize) || options.batchSize < 1)
      throw new InputError(`batchSize must be a positive integer, got ${options.batchSize}`);
    const seed = BigInt(options.seed ?? 0);
    if (seed < 0n || seed >= 1n << 64n) throw new InputError(`seed must be in [0, 2^64), got ${seed}`);
    this.dataset = dataset;
    this.batchSize = options.batchSize;
    this.seed = seed;
    this.shuffle = options.shuffle ?? true;
    this.randomFlip = options.randomFlip ?? false;
  }

  getState(): DataLoaderState {
    return { epoch: this.epoch, position: this.position };
  }

  setState(state: DataLoaderState): void {
    const { epoch, position } = state ?? ({} as DataLoaderState);
    if (!Number.isSafeInteger(epoch) || epoch < 0 || !Number.isSafeInteger(position) || position < 0 || position >= this.dataset.length)
      throw new InputError(`data loader state must be { epoch >= 0, position in [0, ${this.dataset.length}) }, got ${JSON.stringify(state)}`);
    this.epoch = epoch;
    this.position = position;
  }

  /** The dataset order of an epoch. */
  epochOrder(epoch: number): Uint32Array {
    if (this.orderEpoch !== epoch || !this.order) {
      const n = this.dataset.length;
      this.order = this.shuffle ? new SeededRandom(this.seed, SHUFFLE_STREAM, epoch).permutation(n) : Uint32Array.from({ length: n }, (_, i) => i);
      this.orderEpoch = epoch;
    }
    return this.order;
  }

  /** Whether the image at (epoch, position) is mirrored. */
  isFlipped(epoch: number, position: number): boolean {
    return this.randomFlip && (hashKey(this.seed, FLIP_STREAM, epoch, position) & 1) === 1;
  }

  async next(): Promise<Batch> {
    const [C, H, W] = this.dataset.shape;
    const per = C * H * W;
    const data = new Float32Array(this.batchSize * per);
    const labels: number[] = [];
    const indices: number[] = [];
    for (let b = 0; b < this.batchSize; b++) {
      const index = this.epochOrder(this.epoch)[this.position];
      const item = await this.dataset.item(index);
      if (item.pixels.length !== per) throw new InputError(`dataset item ${index} has ${item.pixels.length} values, expected ${per}`);
      data.set(item.pixels, b * per);
      if (this.isFlipped(this.epoch, this.position)) flipHorizontal(data.subarray(b * per, (b + 1) * per), C, H, W);
      if (item.label !== null) labels.push(item.label);
      indices.push(index);
      this.position++;
      if (this.position === this.dataset.length) {
        this.position = 0;
        this.epoch++;
      }
    }
    return { data, shape: [this.batchSize, C, H, W], labels: this.dataset.numClasses === null ? null : labels, indices };
  }
}

// Datasets: numbered collections of training images already in model
// space (CHW float32 in [-1, 1], the model's channels and size), with an
// optional class label each.

export interface DatasetItem {
  /** channels x height x width, values in [-1, 1] */
  pixels: Float32Array;
  /** Class label, or null for unlabeled data. */
  label: number | null;
}

export interface Dataset {
  readonly length: number;
  /** [channels, height, width] of every item. */
  readonly shape: readonly [number, number, number];
  /** Number of classes when items carry labels (labels are 0 .. numClasses-1), else null. */
  readonly numClasses: number | null;
  item(index: number): Promise<DatasetItem>;
}

/** The items of `base` at `indices` (e.g. a training split), renumbered from 0. */
export function subsetDataset(base: Dataset, indices: ArrayLike<number>): Dataset {
  const map = Array.from(indices);
  return {
    length: map.length,
    shape: base.shape,
    numClasses: base.numClasses,
    item: (index: number) => base.item(map[index]!),
  };
}

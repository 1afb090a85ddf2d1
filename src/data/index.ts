// Training data: datasets (MNIST, image folders) and a seeded batch loader.
export type { Dataset, DatasetItem } from './dataset.js';
export { MnistDataset } from './mnist.js';
export type { MnistOptions } from './mnist.js';
export { ImageFolderDataset } from './image_folder.js';
export type { ImageFolderOptions } from './image_folder.js';
export { DataLoader } from './loader.js';
export type { Batch, DataLoaderOptions, DataLoaderState } from './loader.js';
export { decodeImage, preprocessImage } from './image.js';
export { resizeBilinear } from './resample.js';
export { SeededRandom } from './random.js';

// Sample-quality measurement: exact k-NN precision/recall and nearest-
// neighbour (copy) distances in pixel space, MNIST reference sets, batched
// generation, the MNIST CNN's class accuracy and Fréchet distance (these
// need TensorFlow.js installed), and the steps-versus-quality table of
// `marble eval`.
import '../node/host.js';
export { forEachPair, kNearest, kthNeighborSquaredDistances, nearestNeighbors, rows, squaredDistance, squaredDistanceMatrix } from './distance.js';
export type { KNearest, NearestNeighbors, Rows } from './distance.js';
export { precisionRecall } from './precision_recall.js';
export { agreement, classAccuracy, knnLabels, votedLabels } from './classify.js';
export type { PrecisionRecall } from './precision_recall.js';
export { datasetRows, evenSubset, mnistSplit, toPixels } from './mnist_reference.js';
export type { LabeledRows, MnistSplit } from './mnist_reference.js';
export { generateSamples } from './generate.js';
export type { GenerateOptions, Generated } from './generate.js';
export { buildReference, measureSamples, quantile, summarize } from './metrics.js';
export type { DistanceSummary, Reference, SampleMetrics } from './metrics.js';
export { frechetDistance, frechetDistanceOfSets, gaussianOf } from './frechet.js';
export type { FeatureSet, Gaussian } from './frechet.js';
export { sqrtPsd, symmetricEigen } from './symmetric_eigen.js';
export type { SymmetricEigen } from './symmetric_eigen.js';
export { CLASSIFIER_FILES, DEFAULT_CLASSIFIER, MnistClassifier } from './mnist_classifier.js';
export type { ClassifiedDigits, CnnConfig } from './mnist_cnn_spec.js';
export { buildClassifierReference, measureWithClassifier } from './classifier_metrics.js';
export type { ClassifierMetrics, ClassifierReference } from './classifier_metrics.js';
export { tableHeader, tableRow } from './table.js';
export type { TableContext, TableRow } from './table.js';

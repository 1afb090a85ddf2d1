// Errors of the training driver. They extend MarbleError like every other
// marble error, so callers can branch on `instanceof` or on `code`.
import { MarbleError } from '../core/errors.js';

/**
 * A training step that cannot be applied: a non-finite loss or gradient norm.
 * The optimizer update is skipped, so the weights stay as they were before
 * the step.
 */
export class TrainingError extends MarbleError {
  /** The optimizer step that failed (1-based), and what went wrong with it. */
  readonly step: number;
  readonly loss: number;
  constructor(message: string, step: number, loss: number) {
    super('ERR_MARBLE_TRAINING', message);
    this.step = step;
    this.loss = loss;
  }
}

/** A checkpoint that cannot be written, or a saved state that cannot be resumed. */
export class CheckpointError extends MarbleError {
  /** The file or folder at fault. */
  readonly path: string;
  constructor(message: string, path: string, options?: { cause?: unknown }) {
    super('ERR_MARBLE_CHECKPOINT', message);
    this.path = path;
    if (options?.cause !== undefined) (this as { cause?: unknown }).cause = options.cause;
  }
}

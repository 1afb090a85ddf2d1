// Typed errors. Every failure marble reports is one of these, so callers can
// branch on `instanceof` (or on `code`) instead of parsing messages.

export class MarbleError extends Error {
  readonly code: string;
  constructor(code: string, message: string) {
    super(message);
    this.name = new.target.name;
    this.code = code;
  }
}

/** A config.json value marble does not support, or a malformed config. */
export class ConfigError extends MarbleError {
  constructor(message: string) {
    super('ERR_MARBLE_CONFIG', message);
  }
}

/** A safetensors file that is truncated, hostile or otherwise unreadable. */
export class SafetensorsError extends MarbleError {
  constructor(message: string) {
    super('ERR_MARBLE_SAFETENSORS', message);
  }
}

/** Weights that do not match the parameter table the config implies. */
export class WeightsError extends MarbleError {
  readonly missing: string[];
  readonly unexpected: string[];
  readonly misshaped: string[];
  constructor(message: string, missing: string[] = [], unexpected: string[] = [], misshaped: string[] = []) {
    super('ERR_MARBLE_WEIGHTS', message);
    this.missing = missing;
    this.unexpected = unexpected;
    this.misshaped = misshaped;
  }
}

/** A call with bad arguments: wrong shape, NaN, out-of-range values. */
export class InputError extends MarbleError {
  constructor(message: string) {
    super('ERR_MARBLE_INPUT', message);
  }
}

/** A backend that is not available here (no addon build, no wasm, no GPU). */
export class BackendError extends MarbleError {
  constructor(message: string) {
    super('ERR_MARBLE_BACKEND', message);
  }
}

/** Work larger than the memory marble may use; raised before allocating. */
export class MemoryLimitError extends MarbleError {
  constructor(message: string) {
    super('ERR_MARBLE_MEMORY', message);
  }
}

/** A model file that could not be fetched or read (HTTP status, network, permissions). */
export class SourceError extends MarbleError {
  constructor(message: string) {
    super('ERR_MARBLE_SOURCE', message);
  }
}

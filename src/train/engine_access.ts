// The one place the training driver reaches into UNet2DModel: its engine
// handle is private (inference callers must go through the queued forward),
// but the trainer drives the engine's training entry points directly.
import { BackendError } from '../core/errors.js';
import type { EngineModel } from '../core/backend/backend.js';
import type { UNet2DModel } from '../core/model/unet.js';

/** The engine instance behind a UNet; throws BackendError once the UNet is disposed. */
export function engineOf(unet: UNet2DModel): EngineModel {
  const engine = (unet as unknown as { engine: EngineModel | null }).engine;
  if (!engine) throw new BackendError('this UNet2DModel has been disposed');
  return engine;
}

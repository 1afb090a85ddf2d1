// Child process for isa_paths.test: with MARBLE_ISA set in its environment,
// runs every forward fixture on the cpu backend and prints one JSON line with
// the kernel in use and the worst error relative to the diffusers tolerance.
import '../../src/node/host.js';
import { loadUNet } from '../../src/index.js';
import { loadAddon } from '../../src/node/native.js';
import { tensorToFloat32, tensorToInt64AsNumbers } from '../../src/core/model/safetensors.js';
import { readSafetensorsFile } from '../../src/node/safetensors_file.js';
import { UNET_FIXTURES, fixturePath, maxAbs, maxAbsDiff } from '../helpers.js';

let worst = 0;
for (const name of UNET_FIXTURES) {
  const file = await readSafetensorsFile(fixturePath(`unet/${name}/forward.safetensors`));
  const unet = await loadUNet(fixturePath(`unet/${name}`), { backend: 'cpu' });
  const out = await unet.forward(
    tensorToFloat32(file, 'sample'),
    file.tensors.get('sample')!.shape,
    tensorToInt64AsNumbers(file, 'timestep'),
    file.tensors.has('class_labels') ? tensorToInt64AsNumbers(file, 'class_labels') : undefined,
  );
  const expected = tensorToFloat32(file, 'out');
  worst = Math.max(worst, maxAbsDiff(out, expected) / (1e-4 * Math.max(1, maxAbs(expected))));
  unet.dispose();
}
console.log(JSON.stringify({ isa: loadAddon().isa(), worstOverTolerance: worst }));

// Makes a class-conditional model folder ready to be fine-tuned for
// classifier-free guidance: one more class embedding row (the null class,
// initialised to the mean of the others, the embedding of "some digit"),
// num_class_embeds + 1 and the "_classifier_free_guidance" record in
// unet/config.json (src/core/model/guidance.ts). Weights are written float32.
// Then `marble train --model OUT --data ...` trains with the recorded label
// dropout (how docs/guidance.md's figures were made from models/mnist).
//
//   node tools/add_null_class.mjs models/mnist /tmp/mnist-cfg-init [dropout=0.1]
//
// Needs the compiled sources (npx tsc -p .).
import { cp, mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';

import { parseSafetensors, serializeSafetensors, tensorToFloat32 } from '../dist/src/core/model/safetensors.js';

const [source, out, dropoutText = '0.1'] = process.argv.slice(2);
if (!source || !out) throw new Error('usage: node tools/add_null_class.mjs MODEL_DIR OUT_DIR [dropout]');
const dropout = Number(dropoutText);
const unetDir = (dir) => path.join(dir, 'unet');

await mkdir(unetDir(out), { recursive: true });
await cp(source, out, { recursive: true, filter: (p) => !p.includes(`${path.sep}unet`) });

const config = JSON.parse(await readFile(path.join(unetDir(source), 'config.json'), 'utf8'));
const classes = config.num_class_embeds;
if (!Number.isInteger(classes) || (config.class_embed_type ?? null) !== null) throw new Error('not a label-conditional model');
if (config._classifier_free_guidance) throw new Error('the model already records a null class');

const file = parseSafetensors(new Uint8Array(await readFile(path.join(unetDir(source), 'diffusion_pytorch_model.safetensors'))));
const tensors = {};
for (const [name, info] of file.tensors) {
  let data = tensorToFloat32(file, name);
  let shape = info.shape.slice();
  if (name === 'class_embedding.weight') {
    const dim = shape[1];
    const grown = new Float32Array((classes + 1) * dim);
    grown.set(data);
    for (let c = 0; c < classes; c++) for (let j = 0; j < dim; j++) grown[classes * dim + j] += data[c * dim + j] / classes;
    data = grown;
    shape = [classes + 1, dim];
  }
  tensors[name] = { dtype: 'F32', shape, data };
}
await writeFile(path.join(unetDir(out), 'diffusion_pytorch_model.safetensors'), serializeSafetensors(tensors));
config.num_class_embeds = classes + 1;
config._classifier_free_guidance = { label_dropout: dropout, null_class_label: classes };
await writeFile(path.join(unetDir(out), 'config.json'), JSON.stringify(config, null, 2) + '\n');
console.log(`${out}: ${classes} classes + null class ${classes}, label dropout ${dropout}`);

// npm run bench:train (part 1): where a training step's time goes, by op
// family, on the class-conditional MNIST UNet of issue #24 at batch 64 (the
// README's profile table). BENCH_TRAIN_PROFILE_STEPS steps after a warm-up.
import { createUNet } from '../src/index.js';
import { DDPMScheduler } from '../src/core/schedulers/ddpm.js';
import { formatProfile } from '../src/train/profile.js';
import { Trainer } from '../src/train/trainer.js';
import { MNIST_CLASS_CONFIG } from './models.js';

const threads = Number(process.env.BENCH_THREADS ?? 2);
const batchSize = Number(process.env.BENCH_TRAIN_BATCH ?? 64);
const steps = Number(process.env.BENCH_TRAIN_PROFILE_STEPS ?? 5);

const unet = await createUNet(MNIST_CLASS_CONFIG, { backend: 'cpu', threads, seed: 0 });
const trainer = new Trainer({
  unet,
  noiseScheduler: new DDPMScheduler(),
  optimizer: { lr: 1e-3, weightDecay: 0 },
  ema: { decay: 0.999, useEmaWarmup: true },
});
const batch = new Float32Array(batchSize * 28 * 28).map((_, i) => Math.sin(i * 0.37));
const labels = Array.from({ length: batchSize }, (_, i) => i % 10);
await trainer.step(batch, labels); // plans the arena
trainer.startProfile();
for (let i = 0; i < steps; i++) await trainer.step(batch, labels);
console.log(`training step by op family: class-conditional MNIST UNet (1.62M), batch ${batchSize}, cpu, ${threads} threads`);
console.log(formatProfile(trainer.profile()));
trainer.stopProfile();
unet.dispose();

"""Manual check that a marble checkpoint is a diffusers pipeline (not run by CI).

    python tools/check_checkpoint_diffusers.py runs/x/checkpoint out.npy

Loads the folder with DDPMPipeline.from_pretrained and writes the UNet's output
for a fixed input (2 x C x H x W of sin(0.37 i), timesteps [10, 700], class
labels [3, 7] when the model is class-conditional) to out.npy, to compare with
marble's forward on the same input. Run 2026-11-28 on a 10-step class-conditional
MNIST checkpoint: max |diffusers - marble| = 2.4e-5 for outputs up to 0.73.
"""
import sys

import numpy as np
import torch
from diffusers import DDPMPipeline

pipe = DDPMPipeline.from_pretrained(sys.argv[1])
unet = pipe.unet.eval()
c, s = unet.config.in_channels, unet.config.sample_size
x = torch.from_numpy(np.sin(np.arange(2 * c * s * s, dtype=np.float32) * 0.37).reshape(2, c, s, s))
labels = torch.tensor([3, 7]) if unet.config.num_class_embeds else None
with torch.no_grad():
    out = unet(x, torch.tensor([10, 700]), class_labels=labels).sample
np.save(sys.argv[2], out.numpy())
print(type(pipe.scheduler).__name__, tuple(out.shape))

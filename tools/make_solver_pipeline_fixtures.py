"""Reference samples for the solver sampling loops, produced by diffusers.

Not run by CI and not needed by the project: run once, by hand, on a machine
with torch and diffusers (the other fixtures used diffusers 0.40.0.dev0 and
torch 2.13.0+cpu):

    python tools/make_solver_pipeline_fixtures.py test/fixtures

For the `tiny` UNet in test/fixtures/unet it runs the loop diffusers'
pipelines run for these schedulers (StableDiffusionPipeline's, without text
conditioning): latents = randn_tensor(shape, generator) * init_noise_sigma;
for each t in scheduler.timesteps: model input = scale_model_input(latents,
t), model_output = unet(input, t).sample, latents = scheduler.step(
model_output, t, latents[, generator]).prev_sample, with one
torch.Generator('cpu').manual_seed(seed) for the initial noise and every
step's noise. (DDPMPipeline / DDIMPipeline skip init_noise_sigma and
scale_model_input, which sigma-space schedulers need.) It writes the final
samples to pipelines/tiny_solver_samples.safetensors and the cases to
pipelines/tiny_solver_samples.json; test/solver_sampler.test.ts compares
marble's sample(generator: 'torch') with them when they are present.
"""
import inspect
import json
import sys
from pathlib import Path

import torch
from diffusers import (
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    HeunDiscreteScheduler,
    UNet2DModel,
    UniPCMultistepScheduler,
)
from diffusers.utils.torch_utils import randn_tensor
from safetensors.torch import save_file

# (name, scheduler class, config overrides, steps, seed, batch): names as marble's CLI spells them.
CASES = [
    ("dpm++", DPMSolverMultistepScheduler, {}, 10, 0, 2),
    ("dpm++", DPMSolverMultistepScheduler, {"use_karras_sigmas": True}, 10, 1, 2),
    ("dpm++", DPMSolverMultistepScheduler, {"algorithm_type": "sde-dpmsolver++"}, 10, 2, 2),
    ("dpm++", DPMSolverMultistepScheduler, {"solver_order": 3}, 12, 3, 2),
    ("unipc", UniPCMultistepScheduler, {}, 10, 4, 2),
    ("unipc", UniPCMultistepScheduler, {"solver_order": 3, "use_karras_sigmas": True}, 10, 5, 2),
    ("euler", EulerDiscreteScheduler, {}, 15, 6, 2),
    ("euler-a", EulerAncestralDiscreteScheduler, {}, 15, 2**40 + 7, 2),
    ("heun", HeunDiscreteScheduler, {"beta_start": 0.0001, "beta_end": 0.02}, 8, 8, 2),
]


@torch.no_grad()
def run(unet, scheduler, steps, seed, batch):
    g = torch.Generator("cpu").manual_seed(seed)
    cfg = unet.config
    shape = (batch, cfg.in_channels, cfg.sample_size, cfg.sample_size)
    scheduler.set_timesteps(steps)
    latents = randn_tensor(shape, generator=g, dtype=torch.float32) * scheduler.init_noise_sigma
    takes_generator = "generator" in inspect.signature(scheduler.step).parameters
    for t in scheduler.timesteps:
        model_input = scheduler.scale_model_input(latents, t)
        model_output = unet(model_input, t).sample
        kwargs = {"generator": g} if takes_generator else {}
        latents = scheduler.step(model_output, t, latents, **kwargs).prev_sample
    return latents


def main(root: Path):
    out_dir = root / "pipelines"
    out_dir.mkdir(parents=True, exist_ok=True)
    unet = UNet2DModel.from_pretrained(root / "unet" / "tiny").eval()
    tensors = {}
    index = []
    for i, (name, cls, overrides, steps, seed, batch) in enumerate(CASES):
        scheduler = cls(**overrides)
        tensors[f"case{i}"] = run(unet, scheduler, steps, seed, batch).contiguous()
        index.append({"name": f"case{i}", "scheduler": name, "class": cls.__name__,
                      "config": json.loads(scheduler.to_json_string()), "steps": steps, "seed": seed, "batch": batch})
    save_file(tensors, str(out_dir / "tiny_solver_samples.safetensors"))
    (out_dir / "tiny_solver_samples.json").write_text(json.dumps({
        "model": "unet/tiny",
        "generator": "torch.Generator('cpu').manual_seed(seed)",
        "loop": "latents = randn * init_noise_sigma; scale_model_input; unet; step(generator)",
        "cases": index,
    }, indent=2) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]))

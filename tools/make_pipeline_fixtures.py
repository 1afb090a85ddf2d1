"""Reference data for the sampler tests, produced by diffusers' own pipelines.

Not run by CI and not needed by the project: run once, by hand, on a machine
with torch and diffusers (the one that wrote test/fixtures used diffusers
0.40.0.dev0 and torch 2.13.0+cpu):

    python tools/make_pipeline_fixtures.py test/fixtures

For the `tiny` and `class-cond`-free models in test/fixtures/unet it runs
DDPMPipeline and DDIMPipeline with torch.Generator('cpu').manual_seed(seed)
and writes the final samples *before* the pipelines' uint8/np conversion (the
pipelines' own loop, with output_type='pt' skipped by calling the scheduler
loop through the pipeline's __call__ with return_dict and a hook on the last
step). To stay faithful to the pipeline code, the sample is captured by
wrapping scheduler.step and keeping the last prev_sample.
"""
import json
import sys
from pathlib import Path

import torch
from diffusers import DDIMPipeline, DDIMScheduler, DDPMPipeline, DDPMScheduler, UNet2DModel
from safetensors.torch import save_file


def capture_last_sample(scheduler):
    box = {}
    original = scheduler.step

    def step(*args, **kwargs):
        out = original(*args, **kwargs)
        box["prev_sample"] = out.prev_sample.detach().clone()
        return out

    scheduler.step = step
    return box


def main(root: Path):
    out_dir = root / "pipelines"
    out_dir.mkdir(parents=True, exist_ok=True)
    unet = UNet2DModel.from_pretrained(root / "unet" / "tiny").eval()
    cases = [
        ("ddpm", dict(steps=50, seed=0, batch=2)),
        ("ddim", dict(steps=20, seed=1234, batch=2, eta=0.0)),
        ("ddim", dict(steps=20, seed=2**40 + 7, batch=2, eta=1.0)),
    ]
    tensors = {}
    index = []
    for i, (kind, c) in enumerate(cases):
        if kind == "ddpm":
            scheduler = DDPMScheduler()
            pipe = DDPMPipeline(unet=unet, scheduler=scheduler)
            box = capture_last_sample(pipe.scheduler)
            pipe(batch_size=c["batch"], generator=torch.Generator("cpu").manual_seed(c["seed"]),
                 num_inference_steps=c["steps"], output_type="np")
        else:
            scheduler = DDIMScheduler()
            pipe = DDIMPipeline(unet=unet, scheduler=scheduler)
            box = capture_last_sample(pipe.scheduler)
            pipe(batch_size=c["batch"], generator=torch.Generator("cpu").manual_seed(c["seed"]),
                 num_inference_steps=c["steps"], eta=c["eta"], output_type="np")
        tensors[f"case{i}"] = box["prev_sample"].contiguous()
        index.append({"name": f"case{i}", "pipeline": kind, **c})
    save_file(tensors, str(out_dir / "tiny_samples.safetensors"))
    (out_dir / "tiny_samples.json").write_text(json.dumps({
        "model": "unet/tiny",
        "schedulers": "DDPMScheduler() / DDIMScheduler() defaults",
        "generator": "torch.Generator('cpu').manual_seed(seed)",
        "cases": index,
    }, indent=2) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]))

"""What diffusers samples with the embedded model (models/mnist), for
test/embedded_model.test.ts: the whole sampling loop end to end (the UNet at
the committed f16 weights, the scheduler config as committed, torch's
generator), so marble's `generator: 'torch'` runs can be compared with it.

Not run by CI and not needed by the project: run by hand, with torch and
diffusers (written with diffusers 0.40.0.dev0, torch 2.13.0+cpu), again
whenever models/mnist changes (the test checks the weights' hash):

    python tools/make_embedded_sample_fixture.py models/mnist test/fixtures/embedded

Writes mnist_samples.safetensors (one [4, 1, size, size] float32 tensor per
run, size the model's sample_size) and
mnist_samples.json (the runs' settings, the class labels, the seed and the
sha256 of the weights file they were made with).
"""
import hashlib
import json
import sys
from pathlib import Path

import torch
from diffusers import DDIMScheduler, DDPMScheduler, UNet2DModel
from safetensors.torch import save_file

SEED = 5
LABELS = [0, 3, 7, 9]
# name: (scheduler, steps, eta, use_clipped_model_output, guidance scale)
RUNS = {
    "ddim50_eta0": ("ddim", 50, 0.0, False, 1.0),
    "ddim50_eta1": ("ddim", 50, 1.0, False, 1.0),
    "ddim50_eta0_clipped": ("ddim", 50, 0.0, True, 1.0),
    "ddpm50": ("ddpm", 50, None, False, 1.0),
    # classifier-free guidance, where the model was trained for it (label
    # dropout recorded under "_classifier_free_guidance" in its config)
    "ddim50_eta0_guidance1.25": ("ddim", 50, 0.0, False, 1.25),
}


def run(unet, scheduler, steps, eta, clipped, guidance, null):
    scheduler.set_timesteps(steps)
    # as DDIMPipeline / DDPMPipeline do: one generator for the initial noise and every step's
    g = torch.Generator("cpu").manual_seed(SEED)
    size = unet.config.sample_size
    x = torch.randn((len(LABELS), unet.config.in_channels, size, size), generator=g)
    labels = torch.tensor(LABELS)
    with torch.no_grad():
        for t in scheduler.timesteps:
            if guidance == 1.0:
                eps = unet(x, t, class_labels=labels).sample
            else:
                # one doubled batch, conditional then unconditional, as the pipelines do
                out = unet(torch.cat([x, x]), t, class_labels=torch.cat([labels, torch.full_like(labels, null)])).sample
                cond, uncond = out.chunk(2)
                eps = uncond + guidance * (cond - uncond)
            if eta is None:
                x = scheduler.step(eps, t, x, generator=g).prev_sample
            else:
                x = scheduler.step(eps, t, x, eta=eta, use_clipped_model_output=clipped, generator=g).prev_sample
    return x.contiguous()


def main(model: Path, out: Path) -> None:
    torch.set_num_threads(1)
    unet = UNet2DModel.from_pretrained(model / "unet").float().eval()
    config = model / "scheduler"
    tensors = {}
    # marble's private key; diffusers' config loading drops "_" keys, so read the file
    cfg = json.loads((model / "unet" / "config.json").read_text()).get("_classifier_free_guidance")
    guided, null = cfg is not None, (cfg or {}).get("null_class_label")
    runs = {name: r for name, r in RUNS.items() if r[4] == 1.0 or guided}
    for name, (kind, steps, eta, clipped, guidance) in runs.items():
        scheduler = (DDIMScheduler if kind == "ddim" else DDPMScheduler).from_pretrained(config)
        tensors[name] = run(unet, scheduler, steps, eta, clipped, guidance, null)
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, out / "mnist_samples.safetensors")
    weights = (model / "unet" / "diffusion_pytorch_model.safetensors").read_bytes()
    meta = {
        "model": str(model),
        "weights_sha256": hashlib.sha256(weights).hexdigest(),
        "seed": SEED,
        "generator": "torch",
        "class_labels": LABELS,
        "runs": {name: {"scheduler": k, "steps": s, "eta": e, "use_clipped_model_output": c, "guidance_scale": gs}
                 for name, (k, s, e, c, gs) in runs.items()},
        "made_with": {"torch": torch.__version__, "diffusers": __import__("diffusers").__version__},
    }
    (out / "mnist_samples.json").write_text(json.dumps(meta, indent=2) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))

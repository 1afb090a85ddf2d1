"""Reference samples for classifier-free guidance, produced by diffusers.

Not run by CI and not needed by the project: run once, by hand, on a machine
with torch and diffusers (diffusers 0.40.0.dev0 and torch 2.13.0+cpu made the
committed files):

    python tools/make_cfg_fixtures.py test/fixtures

1. Makes a tiny class-conditional UNet2DModel for guidance: 4 classes plus the
   null (unconditional) class, num_class_embeds 5, null label 4, written with
   save_pretrained to unet/cfg/, then records marble's guidance facts in its
   config.json under the private key "_classifier_free_guidance" (as `marble
   train --cfg-dropout` does) and checks that UNet2DModel.from_pretrained
   still loads the folder, logs nothing about the key, and gives the same
   output as the model it saved.
2. Runs the guided loop diffusers' pipelines run (StableDiffusionPipeline's,
   with class labels for the text): latents = randn_tensor(shape, generator)
   * init_noise_sigma; per t: model input = scale_model_input(cat([latents] *
   2), t); out = unet(input, t, class_labels=cat([labels, null labels]));
   cond, uncond = out.chunk(2); eps = uncond + s * (cond - uncond); latents =
   scheduler.step(eps, t, latents[, eta][, generator]).prev_sample; one
   torch.Generator('cpu').manual_seed(seed) for all noise. For DDPM and DDIM
   init_noise_sigma is 1 and scale_model_input the identity, so this is also
   DDPMPipeline's / DDIMPipeline's loop with guidance added.
3. One DDIM and one Euler step fed recorded cond / uncond outputs (no UNet),
   for an exact check of the kernel's combination ("step.*" tensors).
   Writes pipelines/cfg_samples.safetensors and pipelines/cfg_samples.json,
   which test/guidance.test.ts compares marble's sample({ guidanceScale }) with.
"""
import inspect
import io
import json
import logging
import sys
from pathlib import Path

import torch
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    HeunDiscreteScheduler,
    UNet2DModel,
    UniPCMultistepScheduler,
)
from diffusers.utils import logging as diffusers_logging
from diffusers.utils.torch_utils import randn_tensor
from safetensors.torch import save_file

NUM_CLASSES = 4
NULL_LABEL = NUM_CLASSES
GUIDANCE_KEY = "_classifier_free_guidance"

# (marble scheduler name, class, config overrides, steps, seed, guidance, labels, eta)
CASES = [
    ("ddpm", DDPMScheduler, {}, 20, 0, 3.0, [1, 3], None),
    ("ddim", DDIMScheduler, {}, 10, 1, 2.5, [0, 2], 0.0),
    ("ddim", DDIMScheduler, {}, 10, 2**40 + 3, 4.0, [3, 3], 1.0),
    ("ddim", DDIMScheduler, {}, 10, 4, 0.0, [2, 1], 0.0),
    ("dpm++", DPMSolverMultistepScheduler, {}, 8, 5, 3.0, [1, 0], None),
    ("dpm++", DPMSolverMultistepScheduler, {"algorithm_type": "sde-dpmsolver++"}, 8, 6, 2.0, [2, 3], None),
    ("unipc", UniPCMultistepScheduler, {}, 8, 7, 5.0, [0, 1], None),
    ("euler", EulerDiscreteScheduler, {}, 8, 8, 3.0, [3, 0], None),
    ("euler-a", EulerAncestralDiscreteScheduler, {}, 8, 9, 3.0, [1, 2], None),
    ("heun", HeunDiscreteScheduler, {}, 5, 10, 1.5, [2, 0], None),
]


def make_unet(out: Path) -> None:
    torch.manual_seed(0)
    unet = UNet2DModel(
        sample_size=8,
        in_channels=3,
        out_channels=3,
        layers_per_block=1,
        block_out_channels=(16, 32),
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=8,
        attention_head_dim=8,
        num_class_embeds=NUM_CLASSES + 1,
    ).eval()
    # diffusers' default init leaves the class embedding N(0, 1) against a
    # time embedding of a few units: scale it so that labels move the output
    # as a trained model's do, but not so much that guidance saturates.
    with torch.no_grad():
        unet.class_embedding.weight.mul_(0.5)
    unet.save_pretrained(out, safe_serialization=True)
    config_path = out / "config.json"
    config = json.loads(config_path.read_text())
    config[GUIDANCE_KEY] = {"label_dropout": 0.1, "null_class_label": NULL_LABEL}
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")

    # The record must not disturb diffusers: loads, says nothing, same model.
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    diffusers_logging.get_logger("diffusers").addHandler(handler)
    diffusers_logging.set_verbosity_info()
    loaded = UNet2DModel.from_pretrained(out).eval()
    diffusers_logging.get_logger("diffusers").removeHandler(handler)
    diffusers_logging.set_verbosity_warning()
    log = stream.getvalue()
    assert GUIDANCE_KEY not in log and "not expected" not in log, log
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        a = unet(x, 10, class_labels=torch.tensor([0, NULL_LABEL])).sample
        b = loaded(x, 10, class_labels=torch.tensor([0, NULL_LABEL])).sample
    assert torch.equal(a, b)
    print(f"from_pretrained loads {out} with {GUIDANCE_KEY}: ok (log: {log.strip()!r})")


@torch.no_grad()
def run(unet, scheduler, steps, seed, guidance, labels, eta):
    g = torch.Generator("cpu").manual_seed(seed)
    cfg = unet.config
    batch = len(labels)
    shape = (batch, cfg.in_channels, cfg.sample_size, cfg.sample_size)
    scheduler.set_timesteps(steps)
    latents = randn_tensor(shape, generator=g, dtype=torch.float32) * scheduler.init_noise_sigma
    class_labels = torch.tensor(labels + [NULL_LABEL] * batch)
    params = inspect.signature(scheduler.step).parameters
    kwargs = {"generator": g} if "generator" in params else {}
    if eta is not None:
        kwargs["eta"] = eta
    for t in scheduler.timesteps:
        model_input = scheduler.scale_model_input(torch.cat([latents] * 2), t)
        out = unet(model_input, t, class_labels=class_labels).sample
        cond, uncond = out.chunk(2)
        eps = uncond + guidance * (cond - uncond)
        latents = scheduler.step(eps, t, latents, **kwargs).prev_sample
    return latents


@torch.no_grad()
def single_steps(tensors, index):
    """One step of DDIM and of Euler fed recorded cond / uncond outputs (no
    UNet): the fused kernel's combination against diffusers' to the bit."""
    g = torch.Generator("cpu").manual_seed(99)
    shape = (2, 3, 8, 8)
    cond, uncond, sample = (torch.randn(shape, generator=g) for _ in range(3))
    scale = 3.5
    eps = uncond + scale * (cond - uncond)
    tensors["step.cond"], tensors["step.uncond"], tensors["step.sample"] = cond, uncond, sample
    ddim = DDIMScheduler()
    ddim.set_timesteps(10)
    t = int(ddim.timesteps[3])
    tensors["step.ddim"] = ddim.step(eps, t, sample).prev_sample
    euler = EulerDiscreteScheduler()
    euler.set_timesteps(8)
    tensors["step.euler"] = euler.step(eps, euler.timesteps[0], sample * euler.init_noise_sigma).prev_sample
    index.update({"guidance_scale": scale, "ddim": {"steps": 10, "t": t}, "euler": {"steps": 8, "t": float(euler.timesteps[0]),
                  "sample_times_init_noise_sigma": True}})


def main(root: Path):
    unet_dir = root / "unet" / "cfg"
    make_unet(unet_dir)
    unet = UNet2DModel.from_pretrained(unet_dir).eval()
    out_dir = root / "pipelines"
    out_dir.mkdir(parents=True, exist_ok=True)
    tensors = {}
    index = []
    for i, (name, cls, overrides, steps, seed, guidance, labels, eta) in enumerate(CASES):
        scheduler = cls(**overrides)
        tensors[f"case{i}"] = run(unet, scheduler, steps, seed, guidance, labels, eta).contiguous()
        index.append({"name": f"case{i}", "scheduler": name, "class": cls.__name__, "overrides": overrides,
                      "steps": steps, "seed": seed, "guidance_scale": guidance, "class_labels": labels,
                      **({"eta": eta} if eta is not None else {})})
    single = {}
    single_steps(tensors, single)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(out_dir / "cfg_samples.safetensors"))
    (out_dir / "cfg_samples.json").write_text(json.dumps({
        "model": "unet/cfg",
        "null_class_label": NULL_LABEL,
        "generator": "torch.Generator('cpu').manual_seed(seed)",
        "loop": "latents = randn * init_noise_sigma; scale_model_input(cat([latents]*2)); "
                "unet(class_labels=cat([labels, null])); eps = uncond + s * (cond - uncond); step(generator)",
        "cases": index,
        "single_step": single,
    }, indent=2) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]))

"""A UNet fixture no shared fixture covers: class_embed_type 'timestep' with a
learned time embedding. diffusers projects the class labels with the model's
own time_proj (here the learned table, nn.Embedding), then the class MLP.

Not run by CI and not needed by the project: run once, by hand, with torch and
diffusers (written with diffusers 0.40.0.dev0, torch 2.13.0+cpu):

    python tools/make_class_timestep_fixture.py test/fixtures/unet/class-timestep

Writes the same files as ../shared/fixtures/unet/* (see its README):
config.json, diffusion_pytorch_model.safetensors, forward.safetensors
(sample, timestep, class_labels, out, temb, conv_in, down.i, mid, up.i),
train_step.safetensors (x0, noise, timestep, class_labels, noisy, loss,
grad.<param>) and adamw_step.safetensors (param.<name> after one AdamW step).
"""
import sys
from pathlib import Path

import torch
from diffusers import DDPMScheduler, UNet2DModel
from safetensors.torch import save_file

from unet_fixture_common import forward_with_intermediates, trained_like


def main(out: Path) -> None:
    torch.manual_seed(0)
    model = UNet2DModel(
        sample_size=8,
        in_channels=2,
        out_channels=2,
        block_out_channels=(16, 32),
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        layers_per_block=1,
        norm_num_groups=8,
        attention_head_dim=8,
        time_embedding_type="learned",
        num_train_timesteps=1000,
        class_embed_type="timestep",
    )
    trained_like(model, 1)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)

    g = torch.Generator("cpu").manual_seed(2)
    sample = torch.randn((2, 2, 8, 8), generator=g)
    timestep = torch.tensor([17, 999], dtype=torch.int64)
    class_labels = torch.tensor([3, 640], dtype=torch.int64)

    tensors = {"sample": sample, "timestep": timestep, "class_labels": class_labels}
    tensors.update(forward_with_intermediates(model, sample, timestep, class_labels))
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(out / "forward.safetensors"))

    # one training step's loss and gradients (train mode, dropout 0)
    model.train()
    g = torch.Generator("cpu").manual_seed(3)
    x0 = torch.randn((2, 2, 8, 8), generator=g)
    noise = torch.randn((2, 2, 8, 8), generator=g)
    t = torch.tensor([250, 731], dtype=torch.int64)
    noisy = DDPMScheduler(num_train_timesteps=1000).add_noise(x0, noise, t)
    model.zero_grad()
    loss = torch.nn.functional.mse_loss(model(noisy, t, class_labels=class_labels).sample, noise)
    loss.backward()
    train = {"x0": x0, "noise": noise, "timestep": t, "class_labels": class_labels, "noisy": noisy, "loss": loss.detach().reshape(())}
    for name, p in model.named_parameters():
        train[f"grad.{name}"] = p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p)
    save_file({k: v.contiguous() for k, v in train.items()}, str(out / "train_step.safetensors"))

    # one torch.optim.AdamW step on those gradients, from the saved weights
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)
    optimizer.step()
    adamw = {f"param.{name}": p.detach().clone() for name, p in model.named_parameters()}
    save_file({k: v.contiguous() for k, v in adamw.items()}, str(out / "adamw_step.safetensors"))
    print("wrote", out, "loss", float(loss))


if __name__ == "__main__":
    main(Path(sys.argv[1]))

"""UNet fixtures for the small-head attention kernels' head sizes that no other
fixture has: attention_head_dim 12 (three 4-lane vectors a row) and 16 (two
8-lane vectors on avx2 / avx512, four on 4-lane builds), each with 4 heads
over 49 tokens (a 7x7 map, as the embedded model's attention sees).

Not run by CI and not needed by the project: run once, by hand, with torch and
diffusers (written with diffusers 0.40.0.dev0, torch 2.13.0+cpu):

    python tools/make_head_dim_fixtures.py test/fixtures/unet

Writes heads-12/ and heads-16/: config.json, diffusion_pytorch_model.safetensors
and forward.safetensors (sample, timestep, out, temb, conv_in, down.i, mid,
up.i), as ../shared/fixtures/unet/* (see its README).
"""
import sys
from pathlib import Path

import torch
from diffusers import UNet2DModel
from safetensors.torch import save_file

from unet_fixture_common import forward_with_intermediates, trained_like


def write(out: Path, head_dim: int) -> None:
    torch.manual_seed(0)
    model = UNet2DModel(
        sample_size=14,
        in_channels=2,
        out_channels=2,
        block_out_channels=(16, 4 * head_dim),
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        layers_per_block=1,
        norm_num_groups=8,
        attention_head_dim=head_dim,
    )
    trained_like(model, head_dim)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)

    g = torch.Generator("cpu").manual_seed(2)
    sample = torch.randn((2, 2, 14, 14), generator=g)
    timestep = torch.tensor([17, 999], dtype=torch.int64)

    tensors = {"sample": sample, "timestep": timestep}
    tensors.update(forward_with_intermediates(model, sample, timestep))
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(out / "forward.safetensors"))
    print("wrote", out)


if __name__ == "__main__":
    root = Path(sys.argv[1])
    for head_dim in (12, 16):
        write(root / f"heads-{head_dim}", head_dim)

"""What the hand-run UNet fixture scripts in tools/ share: weights that look
trained, and a forward that keeps the intermediates the engine captures
(conv_in, down.i, mid, up.i and the time embedding), named as in
../shared/fixtures/unet/*/forward.safetensors."""
import torch
from diffusers import UNet2DModel


def trained_like(model: UNet2DModel, seed: int) -> None:
    """Norm weights near 1, other vectors ~ N(0, 0.01), matrices ~ N(0, 1/fan_in)."""
    g = torch.Generator("cpu").manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name and name.endswith("weight"):
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=g))
            elif p.ndim == 1:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            else:
                fan_in = p[0].numel() if p.ndim > 1 else p.shape[0]
                p.copy_(torch.randn(p.shape, generator=g) / fan_in ** 0.5)


def forward_with_intermediates(model: UNet2DModel, sample, timestep, class_labels=None) -> dict:
    """model(sample, timestep).sample as `out`, the time MLP's output as
    `temb` (before any class embedding is added, as the engine captures it),
    and each block's output."""
    captured = {}

    def keep(name):
        def hook(_module, _inputs, output):
            value = output[0] if isinstance(output, tuple) else output
            captured[name] = value.detach().clone()
        return hook

    model.eval()
    handles = [model.time_embedding.register_forward_hook(keep("temb")), model.conv_in.register_forward_hook(keep("conv_in"))]
    for i, block in enumerate(model.down_blocks):
        handles.append(block.register_forward_hook(keep(f"down.{i}")))
    handles.append(model.mid_block.register_forward_hook(keep("mid")))
    for i, block in enumerate(model.up_blocks):
        handles.append(block.register_forward_hook(keep(f"up.{i}")))
    with torch.no_grad():
        out = model(sample, timestep, class_labels=class_labels).sample
    for h in handles:
        h.remove()
    return {"out": out, **captured}

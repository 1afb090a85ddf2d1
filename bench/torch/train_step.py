"""PyTorch + diffusers side of `npm run bench:train` (bench/train_vs_torch.ts).

Times the training step diffusers' train_unconditional.py makes (noise and
timesteps drawn, DDPMScheduler.add_noise, UNet2DModel forward, MSE, backward,
AdamW, EMAModel.step) on the model config it is given, on CPU with the given
thread count, and prints one JSON line: {"step_ms": [...], ...}.

Not part of the test suite or CI: it runs only where torch and diffusers are
importable (the benchmark says so and skips PyTorch otherwise).
"""
import json
import sys
import time

import torch
from diffusers import DDPMScheduler, UNet2DModel
from diffusers.training_utils import EMAModel


def main() -> None:
    spec = json.loads(sys.argv[1])
    torch.set_num_threads(spec["threads"])
    torch.manual_seed(0)
    config = {k: v for k, v in spec["config"].items() if not k.startswith("_")}
    unet = UNet2DModel(**config)
    unet.train()
    scheduler = DDPMScheduler(num_train_timesteps=1000)
    optimizer = torch.optim.AdamW(unet.parameters(), lr=1e-3, weight_decay=0.0)
    ema = EMAModel(unet.parameters(), decay=0.999, use_ema_warmup=True) if spec["ema"] else None
    batch, channels, size = spec["batch"], config["in_channels"], spec["size"]
    x0 = torch.rand(batch, channels, size, size) * 2 - 1
    classes = config.get("num_class_embeds")
    labels = torch.randint(0, classes, (batch,)) if classes else None

    def step() -> None:
        noise = torch.randn_like(x0)
        t = torch.randint(0, 1000, (batch,))
        noisy = scheduler.add_noise(x0, noise, t)
        pred = unet(noisy, t, class_labels=labels).sample
        loss = torch.nn.functional.mse_loss(pred, noise)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if ema is not None:
            ema.step(unet.parameters())

    for _ in range(spec["warmup"]):
        step()
    times = []
    for _ in range(spec["iterations"]):
        t0 = time.perf_counter()
        step()
        times.append((time.perf_counter() - t0) * 1000)
    print(json.dumps({"step_ms": times, "torch": torch.__version__, "threads": torch.get_num_threads(),
                      "parameters": sum(p.numel() for p in unet.parameters())}))


if __name__ == "__main__":
    main()

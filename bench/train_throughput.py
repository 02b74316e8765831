"""Training throughput: the full loop against the bare forward+backward+step.

Both are timed in the same run on the same model, batch size and image size. The
bare baseline feeds one pre-made batch again and again (no data loading, no
augmentation); the loop is ``xcyto.train``'s own epoch (data loading, augmentation,
AMP where a GPU has it, scheduler, progress bar). Prints a Markdown table.

    python bench/train_throughput.py                     # efficientnet_lite0 and resnet18, 224 px
    python bench/train_throughput.py --models small_cnn --image-size 128 --steps 5
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from xcyto import models
from xcyto.training import TrainConfig
from xcyto.training import _loop as loop
from xcyto.training._data import prepare_data
from xcyto.training._distributed import DistContext


def bare_images_per_second(model_name, batch_size, image_size, steps, device) -> float:
    model = models.create(model_name, num_classes=5, weights=None).to(device).train()
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    images = torch.randn(batch_size, 3, image_size, image_size, device=device)
    labels = torch.randint(0, 5, (batch_size,), device=device)
    dtype, _ = loop.amp_settings(TrainConfig(), device)
    times = []
    for step in range(steps + 1):
        started = time.perf_counter()
        with loop._autocast(device, dtype):
            loss = torch.nn.functional.cross_entropy(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss.item()
        if step:  # the first step warms up kernels and allocators
            times.append(time.perf_counter() - started)
    return batch_size * len(times) / sum(times)


def loop_images_per_second(model_name, batch_size, image_size, steps, device, workers, data) -> float:
    with tempfile.TemporaryDirectory() as run_dir:
        config = TrainConfig(data=data, synthetic_n=max(200, batch_size * (steps + 2) * 2), synthetic_size=image_size,
                             model=model_name, weights=None, image_size=image_size, batch_size=batch_size,
                             num_workers=workers, device=str(device), out=run_dir)
        data = prepare_data(config, Path(run_dir), reuse_split=False, write=False)
        model = models.create(model_name, num_classes=len(data.classes), weights=None).to(device)
        if device.type == "cuda":
            model = model.to(memory_format=torch.channels_last)
        train_loader = loop._train_loader(config, data, device, DistContext())
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
        dtype, needs_scaler = loop.amp_settings(config, device)
        scaler = torch.amp.GradScaler("cuda", enabled=needs_scaler)
        criterion = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
        loop._train_epoch(model, train_loader, optimizer, scheduler, scaler, criterion, device, dtype, 1, "warm-up", False)
        _, images_per_second = loop._train_epoch(model, train_loader, optimizer, scheduler, scaler, criterion,
                                                 device, dtype, steps, "timed", False)
        return images_per_second


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="efficientnet_lite0,resnet18")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--data", default="synthetic", help="dataset for the loop (default: synthetic cells)")
    parser.add_argument("--workers", default="0,1", help="DataLoader workers to try, comma-separated")
    args = parser.parse_args()
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {name}; batch {args.batch_size}; {args.image_size} px; {args.steps} timed steps\n")
    print("| model | bare fwd+bwd+step (img/s; before / after the loop) | workers | xcyto loop (img/s) | loop / bare |")
    print("|---|---:|---:|---:|---:|")
    for model_name in args.models.split(","):
        for workers in (int(w) for w in args.workers.split(",")):
            # the baseline is timed right before and right after the loop and the faster of the
            # two is kept: a change in load on a shared machine then cannot favour the loop
            before = bare_images_per_second(model_name, args.batch_size, args.image_size, args.steps, device)
            looped = loop_images_per_second(model_name, args.batch_size, args.image_size, args.steps, device, workers, args.data)
            after = bare_images_per_second(model_name, args.batch_size, args.image_size, args.steps, device)
            bare = max(before, after)
            print(f"| {model_name} | {bare:.1f} ({before:.1f} / {after:.1f}) | {workers} | {looped:.1f} | "
                  f"{looped / bare:.0%} |", flush=True)


if __name__ == "__main__":
    main()

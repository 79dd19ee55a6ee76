#!/usr/bin/env python3
"""End-to-end time of a small PyTorch training step loop and an inference loop.

    python3 torch_overhead.py [--seconds 2] [--batch 256] [--width 1024] [--depth 6] [--device 0]

bench/gpu/harness.py runs it alternately with and without the shim (no SM limit, a quota far
above what it uses) and compares the step times. The model is an MLP on random data: small
enough that the loop is bound by kernel launches and allocator traffic, which is where a shim's
per-call cost shows. Each phase warms up, then runs as many steps as fit in --seconds with one
synchronize at the end. Output, one line per phase:

    phase=train steps=<n> wall_ms=<ms> step_ms=<ms> loss=<last loss>
    phase=infer steps=<n> wall_ms=<ms> step_ms=<ms>
    phase=done ok=1
"""

import argparse
import sys
import time


def timed(torch, dev, step, seconds, warmup=30):
    for _ in range(warmup):
        step()
    torch.cuda.synchronize(dev)
    steps = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(20):
            step()
        steps += 20
        if time.perf_counter() >= deadline:
            break
    torch.cuda.synchronize(dev)
    return steps, (time.perf_counter() - start) * 1000.0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--width", type=int, default=1024)
    ap.add_argument("--depth", type=int, default=6)
    ap.add_argument("--device", type=int, default=0)
    args = ap.parse_args()

    import torch  # noqa: PLC0415

    torch.manual_seed(0)
    dev = torch.device("cuda", args.device)
    layers = []
    for _ in range(args.depth):
        layers += [torch.nn.Linear(args.width, args.width), torch.nn.ReLU()]
    layers.append(torch.nn.Linear(args.width, 10))
    model = torch.nn.Sequential(*layers).to(dev)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    x = torch.randn(args.batch, args.width, device=dev)
    y = torch.randint(0, 10, (args.batch,), device=dev)
    loss_fn = torch.nn.CrossEntropyLoss()
    last = {}

    def train_step():
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        last["loss"] = loss

    steps, wall = timed(torch, dev, train_step, args.seconds)
    print(f"phase=train steps={steps} wall_ms={wall:.3f} step_ms={wall / steps:.5f} loss={last['loss'].item():.4f}", flush=True)

    model.eval()
    xi = torch.randn(args.batch, args.width, device=dev)

    def infer_step():
        with torch.inference_mode():
            last["out"] = model(xi)

    steps, wall = timed(torch, dev, infer_step, args.seconds)
    print(f"phase=infer steps={steps} wall_ms={wall:.3f} step_ms={wall / steps:.5f}", flush=True)
    print("phase=done ok=1", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Train the digits CNN shipped with the INT8 case and write its weights (safetensors).

    python scripts/train_digits.py [--out cases/weights/digits_cnn.safetensors]

Seeded and deterministic on CPU; about 10 s on 2 cores. Uses scikit-learn's bundled digits
(no download) through parity.datasets, with the same fixed train/test split the accuracy check
uses, and prints the test accuracy (>= 97% is required).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from safetensors.torch import save_file

from parity.pipeline.datasets import load
from parity_examples.zoo import DigitsCNN


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(Path(__file__).parents[1] / "cases" / "weights" / "digits_cnn.safetensors"))
    parser.add_argument("--epochs", type=int, default=30)
    args = parser.parse_args()

    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True)
    x, y = (torch.from_numpy(a) for a in load("digits", "train"))
    xt, yt = (torch.from_numpy(a) for a in load("digits", "test"))
    model = DigitsCNN()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, args.epochs)
    gen = torch.Generator().manual_seed(0)
    for _ in range(args.epochs):
        model.train()
        for idx in torch.randperm(len(x), generator=gen).split(64):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
        sched.step()
    model.eval()
    with torch.no_grad():
        accuracy = (model(xt).argmax(1) == yt).float().mean().item()
    print(f"test accuracy: {100 * accuracy:.2f}% on {len(yt)} images")
    if accuracy < 0.97:
        raise SystemExit("accuracy below 97%: not writing weights")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

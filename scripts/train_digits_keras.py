"""Train the Keras twin of the digits CNN and write its weights (model.save_weights, .weights.h5).

    python scripts/train_digits_keras.py [--out cases/weights/digits_keras.weights.h5]

Seeded (keras.utils.set_random_seed and deterministic TensorFlow ops); about 15 s on 2 cores.
Uses scikit-learn's bundled digits (no download) through parity.datasets, channels-last, with the
same fixed train/test split the accuracy check uses, and prints the test accuracy (>= 97% is
required). The case cases/keras_digits.yaml loads the weights.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import parity._triton_first  # noqa: F401  (before tensorflow)
import numpy as np

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from parity.pipeline.datasets import load  # noqa: E402
from parity_examples.keras_zoo import digits_cnn  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default = Path(__file__).parents[1] / "cases" / "weights" / "digits_keras.weights.h5"
    parser.add_argument("--out", default=str(default))
    parser.add_argument("--epochs", type=int, default=30)
    args = parser.parse_args()

    keras.utils.set_random_seed(0)
    tf.config.experimental.enable_op_determinism()
    x, y = load("digits", "train")
    xt, yt = load("digits", "test")
    x, xt = np.moveaxis(x, 1, -1), np.moveaxis(xt, 1, -1)  # channels-last
    model = digits_cnn()
    steps = args.epochs * int(np.ceil(len(x) / 64))
    model.compile(optimizer=keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(3e-3, steps)),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    model.fit(x, y, batch_size=64, epochs=args.epochs, shuffle=True, verbose=0)
    accuracy = float((model.predict(xt, verbose=0).argmax(1) == yt).mean())
    print(f"test accuracy: {100 * accuracy:.2f}% on {len(yt)} images")
    if accuracy < 0.97:
        raise SystemExit("accuracy below 97%: not writing weights")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    model.save_weights(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

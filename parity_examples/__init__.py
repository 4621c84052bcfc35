"""Example models for parity's shipped cases (random weights from a fixed seed, or weights trained by
a script in the repository). Not part of the harness: case files name them as
``parity_examples.zoo:tiny_cnn`` like any user's factory."""

"""Part 1's tables of layers: the MNIST and the CIFAR-10 networks, layer by layer."""

from __future__ import annotations

from cnn_course.judging.layers import LayerSpec, conv_spec, pool_spec, relu_spec

__all__ = [
    "CIFAR_LAYERS",
    "MNIST_LAYERS",
]


# The architectures part 1's tables describe, layer by layer.
MNIST_LAYERS = (
    conv_spec(1, 32, 28),
    relu_spec((32, 28, 28)),
    conv_spec(32, 32, 28),
    relu_spec((32, 28, 28)),
    pool_spec(32, 14),
    LayerSpec("Flatten", {}, (6272,)),
    LayerSpec("Linear", {"in": 6272, "out": 10}, (10,)),
)


CIFAR_LAYERS = (
    conv_spec(3, 32, 32),
    relu_spec((32, 32, 32)),
    conv_spec(32, 32, 32),
    relu_spec((32, 32, 32)),
    pool_spec(32, 16),
    conv_spec(32, 32, 16),
    relu_spec((32, 16, 16)),
    pool_spec(32, 8),
    LayerSpec("Flatten", {}, (2048,)),
    LayerSpec("Linear", {"in": 2048, "out": 256}, (256,)),
    relu_spec((256,)),
    LayerSpec("Linear", {"in": 256, "out": 10}, (10,)),
)

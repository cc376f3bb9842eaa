"""Part 2's table of layers (part 1's CIFAR-10 network with batch normalisation) and facts."""

from __future__ import annotations

from cnn_course.judging.layers import LayerSpec, block_spec, pool_spec, relu_spec

__all__ = [
    "AUGMENT_PADDING",
    "BETTER_LAYERS",
]


# Part 2's table: part 1's CIFAR-10 network with batch normalisation after each convolution.
BETTER_LAYERS = (
    *block_spec(3, 32, 32),
    *block_spec(32, 32, 32),
    pool_spec(32, 16),
    *block_spec(32, 32, 16),
    pool_spec(32, 8),
    LayerSpec("Flatten", {}, (2048,)),
    LayerSpec("Linear", {"in": 2048, "out": 256}, (256,)),
    relu_spec((256,)),
    LayerSpec("Linear", {"in": 256, "out": 10}, (10,)),
)


AUGMENT_PADDING = 4  # the largest shift a crop of the padded image gives, in pixels

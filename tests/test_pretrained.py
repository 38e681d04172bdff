"""The pretrained backbone: the legacy PyTorch reader, the Keras EfficientNet-Lite0 and its ImageNet weights."""

import pickle
import struct

import numpy as np
import pytest

from semdefect.board.errors import ConfigError, ModelError
from semdefect.config import load_config
from semdefect.training.torch_file import LEGACY_MAGIC, read_state_dict


class TorchName:
    """Stands for a torch global (a storage type, the tensor rebuild function) in a pickle written without torch."""

    def __init__(self, module, name):
        self.module, self.name = module, name

    def __reduce__(self):
        return self.name  # pickle saves it as a global: see LegacyPickler.save_global

    def __call__(self):  # pickle only saves callables as a reduce function; never called
        raise NotImplementedError


REBUILD = TorchName("torch._utils", "_rebuild_tensor_v2")
FLOAT_STORAGE = TorchName("torch", "FloatStorage")


class StorageKey(str):
    """A storage reference: pickled as a persistent id, as torch.save does."""


class LegacyPickler(pickle._Pickler):  # the pure-Python pickler lets a global be written under any name
    def persistent_id(self, obj):
        return ("storage", FLOAT_STORAGE, str(obj), "cpu", 0) if isinstance(obj, StorageKey) else None

    def save_global(self, obj, name=None):
        self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode())


class Tensor:
    def __init__(self, key, shape, strides):
        self.args = (StorageKey(key), 0, shape, strides, False, {})

    def __reduce__(self):
        return (REBUILD, self.args)


def write_legacy_file(path, tensors):
    """A file laid out as torch.save wrote it before 1.6, made without torch: pickles, then the raw storages.

    `tensors` maps a name to (storage contents, shape, strides): a tensor is a strided view of its storage."""
    with open(path, "wb") as file:
        for header in (LEGACY_MAGIC, 1001, {"little_endian": True}):
            pickle.dump(header, file, protocol=2)
        state = {name: Tensor(str(i), shape, strides) for i, (name, (_, shape, strides)) in enumerate(tensors.items())}
        LegacyPickler(file, protocol=2).dump(state)
        pickle.dump([str(i) for i in range(len(tensors))], file, protocol=2)
        for storage, _, _ in tensors.values():
            file.write(struct.pack("<q", storage.size) + storage.astype("<f4").tobytes())


def test_reader_rebuilds_tensors_from_their_storages_and_strides(tmp_path):
    storage = np.arange(12, dtype=np.float32)
    path = tmp_path / "weights.pth"
    # "a": row-major (3, 4); "b": shape (4, 3) over a storage laid out column-major (as the package's kernels are
    # laid out in TensorFlow's order)
    write_legacy_file(path, {"a.weight": (storage, (3, 4), (4, 1)), "b.weight": (storage, (4, 3), (1, 4))})
    state = read_state_dict(path)
    np.testing.assert_array_equal(state["a.weight"], storage.reshape(3, 4))
    np.testing.assert_array_equal(state["b.weight"], storage.reshape(3, 4).T)


def test_reader_refuses_other_files_and_code(tmp_path):
    other = tmp_path / "other.pth"
    other.write_bytes(pickle.dumps({"not": "torch"}))
    with pytest.raises(ModelError, match=r"other\.pth: not a legacy PyTorch file"):
        read_state_dict(other)
    evil = tmp_path / "evil.pth"
    with open(evil, "wb") as file:
        for header in (LEGACY_MAGIC, 1001, {}):
            pickle.dump(header, file)
        pickle.dump(print, file)  # a global outside a state dict: must not be loaded
    with pytest.raises(ModelError, match=r"refusing to load builtins\.print"):
        read_state_dict(evil)


def test_pretrained_needs_a_pretrained_backbone():
    from semdefect.training.model import build_from_config

    with pytest.raises(ConfigError, match=r"model\.pretrained=true needs a pretrained backbone"):
        build_from_config(load_config(None, ["model.backbone=cnn", "model.pretrained=true"]))


@pytest.mark.slow
def test_imagenet_weights_load_right():
    """The weights of the installed package in our Keras network classify scikit-image's bundled photographs as
    ImageNet says they are: if a layout, a padding or the input scaling were wrong, these would come out wrong."""
    skimage_data = pytest.importorskip("skimage.data")
    from PIL import Image

    from semdefect.training.efficientnet_lite import build_imagenet_classifier

    model = build_imagenet_classifier(224)
    expected = {"chelsea": {281, 282, 285},  # tabby, tiger cat, Egyptian cat
                "coffee": {967, 968, 504}}   # espresso, cup, coffee mug
    for name, classes in expected.items():
        pixels = np.asarray(Image.fromarray(getattr(skimage_data, name)()).resize((224, 224), Image.BILINEAR))
        probabilities = model.predict(pixels[None].astype(np.float32) / 255, verbose=0)[0]
        top3 = set(np.argsort(probabilities)[::-1][:3].tolist())
        assert top3 == classes, (name, top3)
        assert probabilities.max() > 0.5


@pytest.mark.slow
def test_grey_backbone_equals_the_colour_network_fed_grey_thrice():
    import keras

    from semdefect.training import efficientnet_lite
    from semdefect.training.model import build_efficientnet

    grey = build_efficientnet(10, 64, pretrained=True)
    colour_in = keras.Input((64, 64, 3))
    colour = keras.Model(colour_in, efficientnet_lite.features(efficientnet_lite.scale_input(colour_in)))
    efficientnet_lite.load_pretrained(colour)
    x = np.random.default_rng(0).random((2, 64, 64, 1), dtype=np.float32)
    grey_features = keras.Model(grey.inputs, grey.get_layer("conv_head_relu6").output).predict(x, verbose=0)
    np.testing.assert_allclose(grey_features, colour.predict(np.repeat(x, 3, axis=-1), verbose=0), atol=1e-4)

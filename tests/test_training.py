import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import train_model
from conftest import TINY_SIZE, assert_one_line_error, tiny_overrides
from semdefect.config import load_config
from semdefect.errors import ConfigError
from semdefect.images import Preprocess
from semdefect.model import build_from_config, build_model, load_model, model_facts
from semdefect.training import (BatchSequence, RunPaths, augment_batch, class_weights, gaussian_blur, mixup_batch,
                                resume_or_build, shrink_batch, start_from, style_batch, zoom_batch)


def test_augmentation_keeps_shape_and_range_and_is_seeded():
    x = np.random.default_rng(0).uniform(0, 1, (8, 32, 32, 1)).astype(np.float32)
    a = augment_batch(x, np.random.default_rng(1), noise_std=0.05)
    b = augment_batch(x, np.random.default_rng(1), noise_std=0.05)
    c = augment_batch(x, np.random.default_rng(2), noise_std=0.05)
    assert a.shape == x.shape and a.dtype == np.float32 and 0 <= a.min() and a.max() <= 1
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c) and not np.array_equal(a, x)


def test_augmentation_without_noise_only_moves_pixels_and_levels():
    # A flip or rotation keeps the multiset of pixel values; brightness/contrast is affine per image.
    x = np.random.default_rng(0).uniform(0.3, 0.7, (4, 16, 16, 1)).astype(np.float32)
    y = augment_batch(x, np.random.default_rng(3), noise_std=0.0)
    for before, after in zip(x, y):
        slope, offset = np.polyfit(np.sort(before.ravel()), np.sort(after.ravel()), 1)
        assert 0.75 < slope < 1.3 and np.allclose(np.sort(before.ravel()) * slope + offset, np.sort(after.ravel()),
                                                  atol=1e-4)


def test_zoom_magnifies_a_crop_up_to_the_given_factor():
    # A linear ramp stays a ramp under a crop-and-resize; magnified by z, it rises 1/z as much per pixel, and
    # z is in [1, zoom]. Zoom 1 leaves the image as it was.
    ramp = np.tile(np.linspace(0, 1, 64, dtype=np.float32), (64, 1))[None, :, :, None].repeat(6, axis=0)
    same = zoom_batch(ramp, np.random.default_rng(0), 1.0)
    np.testing.assert_allclose(same, ramp, atol=1e-5)
    zoomed = zoom_batch(ramp, np.random.default_rng(0), 2.0)
    slopes = np.diff(zoomed[:, 32, 8:56, 0], axis=1).mean(axis=1) / np.diff(ramp[0, 32, 8:56, 0]).mean()
    assert np.all(slopes >= 0.49) and np.all(slopes <= 1.01) and slopes.min() < 0.95
    assert zoomed.dtype == np.float32 and zoomed.min() >= 0 and zoomed.max() <= 1


def test_zoom_out_shows_the_same_scene_smaller_with_its_mirror_images_around_it():
    # Stripes of period 16 shrunk by s in [1, 3] have period 16 / s: between 1 and 3 times as many edges along a
    # row, the stripes' share of the field kept (mirror images of a stripe pattern are stripes).
    stripes = (np.arange(128) // 8 % 2).astype(np.float32)
    x = np.tile(stripes, (128, 1))[None, :, :, None].repeat(8, axis=0)
    shrunk = shrink_batch(x, np.random.default_rng(0), 3.0)
    edges = np.diff(shrunk[:, 64, :, 0] > 0.5, axis=1).sum(axis=1)
    assert np.all(edges >= 15) and np.all(edges <= 3 * 16 + 2) and edges.max() > 20
    assert np.all(np.abs(shrunk.mean(axis=(1, 2, 3)) - 0.5) < 0.1)
    assert shrunk.dtype == np.float32 and shrunk.shape == x.shape
    flat = np.full((2, 64, 64, 1), 0.3, np.float32)
    np.testing.assert_allclose(shrink_batch(flat, np.random.default_rng(1), 2.0), flat, atol=1e-6)


def test_mixup_blends_images_and_labels_alike_and_keeps_most_of_each_image():
    x = np.random.default_rng(0).uniform(0, 1, (16, 8, 8, 1)).astype(np.float32)
    y = np.eye(4, dtype=np.float32)[np.arange(16) % 4]
    mixed_x, mixed_y = mixup_batch(x, y, np.random.default_rng(1), alpha=0.4)
    np.testing.assert_allclose(mixed_y.sum(axis=1), 1.0, rtol=1e-6)
    own = mixed_y[np.arange(16), np.arange(16) % 4]
    same_class_partner = own > 0.999  # a partner of the same class adds to the same label
    assert np.all(own >= 0.5 - 1e-6) and not np.all(same_class_partner)
    # every mixed image is its own image plus (1 - w) times one other image of the batch
    for i in np.flatnonzero(~same_class_partner):
        w = own[i]
        partner = (mixed_x[i] - w * x[i]) / (1 - w)
        assert min(np.abs(partner - x[j]).max() for j in range(16)) < 1e-4
    again = mixup_batch(x, y, np.random.default_rng(1), alpha=0.4)
    np.testing.assert_array_equal(again[0], mixed_x)


def test_gaussian_blur_spreads_an_impulse_by_its_own_sigma_per_image():
    x = np.zeros((3, 41, 41, 1), np.float32)
    x[:, 20, 20, 0] = 1.0
    out = gaussian_blur(x, np.array([0.0, 1.0, 2.0]))
    np.testing.assert_array_equal(out[0], x[0])  # sigma 0: unchanged
    offsets = np.arange(41) - 20
    for i, sigma in ((1, 1.0), (2, 2.0)):
        assert abs(out[i].sum() - 1.0) < 1e-5
        row = out[i, 20, :, 0] / out[i, 20, :, 0].sum()
        assert abs(np.sqrt((row * offsets ** 2).sum()) - sigma) < 0.05
    flat = np.full((2, 16, 16, 1), 0.3, np.float32)
    np.testing.assert_allclose(gaussian_blur(flat, np.array([0.5, 1.5])), flat, atol=1e-6)  # edges repeated


def test_style_changes_levels_monotonically_and_keeps_the_range():
    x = np.random.default_rng(0).uniform(0, 1, (8, 16, 16, 1)).astype(np.float32)
    out = style_batch(x, np.random.default_rng(1), gamma=0.5, blur=0.0)
    assert out.dtype == np.float32 and out.min() >= 0 and out.max() <= 1
    for before, after in zip(x, out):  # a gamma keeps the order of the pixels
        order = np.argsort(before.ravel())
        assert np.all(np.diff(after.ravel()[order]) >= -1e-6)
    np.testing.assert_array_equal(style_batch(x, np.random.default_rng(1), 0.0, 0.0), x)


def test_class_weights_balance_the_loss():
    weights = class_weights(np.array([0, 0, 0, 1]), 3)
    assert weights[0] * 3 == weights[1] * 1 and weights[2] == 1.0


def test_batches_are_deterministic_per_epoch_and_cover_every_image():
    x = np.arange(10, dtype=np.float32).reshape(10, 1, 1, 1)
    y = np.arange(10)
    seq = BatchSequence(x, y, batch_size=4, seed=5, augment=False, noise_std=0)
    seq.set_epoch(3)
    first = [seq[i][1].tolist() for i in range(len(seq))]
    seq.set_epoch(4)
    other = [seq[i][1].tolist() for i in range(len(seq))]
    seq.set_epoch(3)
    assert [seq[i][1].tolist() for i in range(len(seq))] == first != other
    assert sorted(sum(first, [])) == list(range(10)) and len(seq) == 3


def test_resume_continues_from_the_last_checkpoint(trained, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(trained["out"], out, ignore=shutil.ignore_patterns("eval*"))
    overrides = [o for o in trained["overrides"] if not o.startswith("train.")] + [
        "train.tensorboard=false", f"train.output={out / 'sem_cnn.keras'}", "train.epochs=2", "train.resume=true"]
    assert train_model.main(overrides) == 0
    history = json.loads((out / "sem_cnn.history.json").read_text())["history"]
    assert len(history["loss"]) == 2  # epoch 1 from the first run, epoch 2 from this one
    assert json.loads((out / "checkpoints" / "state.json").read_text())["epoch"] == 2


def default_model():
    return build_from_config(load_config(None, [f"data.image_size={TINY_SIZE}"]))


def test_init_from_copies_the_weights_of_a_matching_model(trained):
    source, facts = load_model(trained["keras"])
    fresh = default_model()
    start_from(fresh, trained["keras"], facts)
    for theirs, ours in zip(source.get_weights(), fresh.get_weights()):
        np.testing.assert_array_equal(theirs, ours)


def test_init_from_refuses_other_layers_or_preprocessing(trained):
    _, facts = load_model(trained["keras"])
    with pytest.raises(ConfigError, match="other layers"):
        start_from(build_model(10, TINY_SIZE, "flatten"), trained["keras"], facts)
    other = model_facts(json.loads(facts["class_names"]), Preprocess(image_size=TINY_SIZE, normalize="none"))
    with pytest.raises(ConfigError, match="preprocess"):
        start_from(default_model(), trained["keras"], other)


def test_init_from_a_file_that_is_not_a_model_exits_2(trained, tmp_path, capsys):
    bad = tmp_path / "start.keras"
    bad.write_bytes(b"not a zip")
    overrides = [o for o in trained["overrides"] if not o.startswith("train.output")] + [
        f"train.output={tmp_path / 'm.keras'}", f"train.init_from={bad}"]
    assert train_model.main(overrides) == 2
    assert_one_line_error(capsys.readouterr().err, str(bad))
    assert not (tmp_path / "m.keras").exists()


def test_weight_decay_reaches_the_optimizer_and_zero_means_plain_adam(tmp_path):
    facts = model_facts(["a", "b"], Preprocess(image_size=TINY_SIZE))
    for decay, expected in ((0.05, 0.05), (0.0, None)):
        cfg = load_config(None, [f"data.image_size={TINY_SIZE}", "data.classes=[a, b]", f"train.weight_decay={decay}",
                                 f"train.output={tmp_path / str(decay) / 'm.keras'}"])
        model, state = resume_or_build(cfg, RunPaths(Path(cfg["train"]["output"])), facts, steps_per_epoch=1)
        assert state is None and model.optimizer.weight_decay == expected


def test_fit_on_train_and_val_trains_on_both_and_keeps_the_last_epoch(tiny_dataset, tmp_path):
    out = tmp_path / "m.keras"
    overrides = tiny_overrides(tiny_dataset, tmp_path)[:2] + [
        "train.epochs=3", "train.patience=1", "train.fit_on=train+val", "train.tensorboard=false",
        "train.augment=false", f"train.output={out}"]
    assert train_model.main(overrides) == 0
    record = json.loads(out.with_suffix(".history.json").read_text())
    assert record["train_images"] == 80 and record["val_images"] == 20  # 60 train + 20 val images trained on
    assert record["best_epoch"] == 3 and record["best_val_accuracy"] is None  # patience 1 cannot stop it early
    assert not any(key.startswith("val_") for key in record["history"])
    last, _ = load_model(out.parent / "checkpoints" / "last.keras")
    for saved, final in zip(load_model(out)[0].get_weights(), last.get_weights()):
        np.testing.assert_array_equal(saved, final)

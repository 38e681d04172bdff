import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY_SIZE, assert_one_line_error, tiny_overrides

import train_model
from semdefect.board.errors import ConfigError
from semdefect.board.images import Preprocess
from semdefect.board.metadata import ModelMetadata
from semdefect.config import load_config
from semdefect.training.model import build_from_config, build_model, load_model
from semdefect.training.train import BatchSequence, start_from


def test_batches_are_deterministic_per_epoch_and_cover_every_image():
    x = np.arange(10, dtype=np.float32).reshape(10, 1, 1, 1)
    y = np.arange(10)
    seq = BatchSequence(x, y, batch_size=4, seed=5, augment=False)
    seq.set_epoch(3)
    first = [seq[i][1].tolist() for i in range(len(seq))]
    seq.set_epoch(4)
    other = [seq[i][1].tolist() for i in range(len(seq))]
    seq.set_epoch(3)
    assert [seq[i][1].tolist() for i in range(len(seq))] == first != other
    assert sorted(i for batch in first for i in batch) == list(range(10)) and len(seq) == 3


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
    source, metadata = load_model(trained["keras"])
    fresh = default_model()
    start_from(fresh, trained["keras"], metadata)
    for theirs, ours in zip(source.get_weights(), fresh.get_weights()):
        np.testing.assert_array_equal(theirs, ours)


def test_init_from_refuses_other_layers_or_preprocessing(trained):
    _, metadata = load_model(trained["keras"])
    with pytest.raises(ConfigError, match="other layers"):
        start_from(build_model(10, TINY_SIZE, "flatten"), trained["keras"], metadata)
    other = ModelMetadata.create(metadata.class_names, Preprocess(image_size=TINY_SIZE, normalize="none"), "test")
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


@pytest.mark.slow  # trains a model
def test_fit_on_train_and_val_trains_on_both_and_keeps_the_last_epoch(tiny_dataset, tmp_path):
    out = tmp_path / "m.keras"
    overrides = tiny_overrides(tiny_dataset, tmp_path)[:2] + [
        "train.epochs=3", "train.patience=1", "train.fit_on=train+val", "train.tensorboard=false",
        "train.augment=false", f"train.output={out}"]
    assert train_model.main(overrides) == 0
    record = json.loads(out.with_suffix(".history.json").read_text())
    # 60 train + 20 val images, less one per class held out for the review bin
    assert record["train_images"] == 70 and record["val_images"] == 20 and len(record["held_out"]) == 10
    assert record["best_epoch"] == 3 and record["best_val_accuracy"] is None  # patience 1 cannot stop it early
    assert not any(key.startswith("val_") for key in record["history"])
    last, _ = load_model(out.parent / "checkpoints" / "last.keras")
    for saved, final in zip(load_model(out)[0].get_weights(), last.get_weights()):
        np.testing.assert_array_equal(saved, final)


def test_balanced_batches_draw_every_source_equally_often():
    groups = np.array(["big"] * 90 + ["small"] * 10)
    x, y = np.zeros((100, 1, 1, 1), np.float32), np.arange(100)
    seq = BatchSequence(x, y, batch_size=10, seed=1, augment=False, groups=groups)
    drawn = []
    for epoch in range(20):
        seq.set_epoch(epoch)
        drawn += [seq[i][1] for i in range(len(seq))]
    drawn = np.concatenate(drawn)
    assert len(drawn) == 20 * 100  # an epoch still draws as many images as there are
    small_share = np.mean(drawn >= 90)
    assert 0.45 < small_share < 0.55, small_share  # 10 % of the images, half of the draws


def test_one_source_only_leaves_plain_shuffling():
    from semdefect.training.train import source_groups

    paths = [Path(f"train/a/km_{i}.png") for i in range(4)] + [Path(f"train/b/av_{i}.png") for i in range(2)]
    assert source_groups(paths, ["km_", "av_"]).tolist() == ["km_"] * 4 + ["av_"] * 2
    assert source_groups(paths[:4], ["km_", "av_"]) is None
    assert source_groups(paths, ["zz_"]) is None  # no file has a prefix: one group

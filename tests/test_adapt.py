"""adapt_model.py: a trained model, fine-tuned on a few labelled images of a new source."""

import shutil

import numpy as np
import pytest
from conftest import TINY_SIZE, assert_one_line_error

import adapt_model
from semdefect.training.model import KerasClassifier


def labelled_folder(trained, tmp_path, classes=("crack", "via"), per_class=2):
    """A few labelled images of two classes, as a user would lay them out (no splits)."""
    folder = tmp_path / "labelled"
    for name in classes:
        (folder / name).mkdir(parents=True)
        for image in sorted((trained["data"] / "test" / name).glob("*.png"))[:per_class]:
            shutil.copy(image, folder / name / image.name)
    return folder


def overrides(trained):
    return [f"data.image_size={TINY_SIZE}", "adapt.epochs=1", "adapt.base_per_class=2"]


def test_adapted_model_keeps_classes_preprocessing_and_review_bin(trained, tmp_path, capsys):
    out = tmp_path / "adapted.keras"
    code = adapt_model.main(["--model", str(trained["keras"]), "--data", str(labelled_folder(trained, tmp_path)),
                             "--base-data", str(trained["data"]), "--unlabelled", str(trained["data"] / "test"),
                             "--output", str(out), *overrides(trained)])
    assert code == 0, capsys.readouterr().err
    base, adapted = KerasClassifier(trained["keras"]), KerasClassifier(out)
    assert adapted.class_names == base.class_names and adapted.prep == base.prep
    assert adapted.metadata.review == base.metadata.review  # temperature and threshold carried over
    report = capsys.readouterr().out
    assert '"labelled": 4' in report and '"base_images": 20' in report and "carried over" in report
    assert "--unlabelled not used" in report  # adapt.pseudo_labels is off by default
    bank = adapted.model.get_layer("agreement").get_weights()[0]
    assert len(bank) == 4 + 20  # the labelled and the base images the model was fitted on
    weights_changed = any(not np.array_equal(a, b) for a, b in zip(adapted.model.get_weights(),
                                                                     base.model.get_weights()))
    assert weights_changed


def test_unlabelled_images_alone_renormalise_and_keep_the_weights(trained, tmp_path, capsys):
    out = tmp_path / "adapted.keras"
    code = adapt_model.main(["--model", str(trained["keras"]), "--unlabelled", str(trained["data"] / "test"),
                             "--output", str(out), *overrides(trained)])
    assert code == 0, capsys.readouterr().err
    report = capsys.readouterr().out
    assert "BatchNorm statistics re-estimated" in report and "neighbour bank kept" in report
    base, adapted = KerasClassifier(trained["keras"]), KerasClassifier(out)
    changed = {w.path for w, a, b in zip(adapted.model.weights, adapted.model.get_weights(), base.model.get_weights())
               if not np.array_equal(a, b)}
    assert changed and all("moving_" in name for name in changed)  # only the BatchNorm statistics moved


def test_labelled_and_unlabelled_images_make_a_second_round(trained, tmp_path, capsys):
    out = tmp_path / "adapted.keras"
    code = adapt_model.main(["--model", str(trained["keras"]), "--data", str(labelled_folder(trained, tmp_path)),
                             "--unlabelled", str(trained["data"] / "test"), "--output", str(out),
                             *overrides(trained), "adapt.pseudo_labels=true"])
    assert code == 0, capsys.readouterr().err
    report = capsys.readouterr().out
    unlabelled = len(list((trained["data"] / "test").rglob("*.png")))
    assert f'"unlabelled": {unlabelled}' in report and "pseudo-labelled" in report


def test_the_surest_share_of_each_answered_class_is_kept():
    from semdefect.adaptation.adapt import surest_answers

    class Model:
        @staticmethod
        def predict_on_batch(x):
            return probabilities[:len(x)]

    probabilities = np.array([[0.9, 0.1], [0.6, 0.4], [0.7, 0.3], [0.8, 0.2], [0.45, 0.55]], np.float32)
    images = surest_answers(Model(), np.arange(5, dtype=np.float32).reshape(5, 1, 1, 1), 0.5)
    # class 0 answered 4 times: its surest 2 (0.9, 0.8); class 1 once: kept, however unsure
    assert images.x.ravel().tolist() == [0, 3, 4] and images.y.tolist() == [0, 0, 1]


@pytest.mark.parametrize("case, fragment", [
    ("neither", "give labelled images (--data), unlabelled ones (--unlabelled) or both"),
    ("unknown class", "not among the model's classes"),
    ("empty", "has no class folders"),
    ("not keras", "the adapted model is a .keras file"),
])
def test_bad_input_exits_2_in_one_line(trained, tmp_path, capsys, case, fragment):
    folder = labelled_folder(trained, tmp_path)
    output = tmp_path / "out.keras"
    if case == "unknown class":
        (folder / "scratch").mkdir()
        shutil.copy(next((folder / "via").iterdir()), folder / "scratch" / "x.png")
    if case == "empty":
        folder = tmp_path / "empty"
        folder.mkdir()
    if case == "not keras":
        output = tmp_path / "out.onnx"
    args = ["--model", str(trained["keras"]), "--output", str(output), *overrides(trained)]
    if case != "neither":
        args += ["--data", str(folder)]
    assert adapt_model.main(args) == 2
    assert_one_line_error(capsys.readouterr().err, fragment)
    assert not output.exists()


def test_a_model_that_is_not_keras_exits_2(trained, tmp_path, capsys):
    args = ["--model", str(trained["onnx"]), "--data", str(labelled_folder(trained, tmp_path)),
            "--output", str(tmp_path / "out.keras")]
    assert adapt_model.main(args) == 2
    assert_one_line_error(capsys.readouterr().err, "expected a .keras")

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
    bank = adapted.model.get_layer("agreement").get_weights()[0]
    assert len(bank) == 4 + 20  # the labelled and the base images the model was fitted on
    weights_changed = any(not np.array_equal(a, b) for a, b in zip(adapted.model.get_weights(),
                                                                     base.model.get_weights()))
    assert weights_changed


def test_unlabelled_images_are_used_where_the_review_bin_accepts_them(trained, tmp_path, capsys):
    from semdefect.data.dataset import load_split
    from semdefect.evaluation.scoring import predict_scored

    base = KerasClassifier(trained["keras"])
    test = load_split(trained["data"], "test", base.class_names, base.prep)
    accepted = int((predict_scored(base, test.x)[1] >= base.threshold).sum())
    out = tmp_path / "adapted.keras"
    code = adapt_model.main(["--model", str(trained["keras"]), "--unlabelled", str(trained["data"] / "test"),
                             "--base-data", str(trained["data"]), "--output", str(out), *overrides(trained)])
    assert code == 0 and out.is_file()
    assert f'"pseudo_labelled": {accepted}' in capsys.readouterr().out


def test_the_pseudo_labels_are_the_answers_the_review_bin_accepts(monkeypatch):
    import semdefect.evaluation.scoring as scoring
    from semdefect.adaptation.adapt import pseudo_labelled

    class Model:
        threshold = 0.6

    probabilities = np.array([[0.9, 0.1], [0.45, 0.55], [0.2, 0.8]], np.float32)
    monkeypatch.setattr(scoring, "predict_scored", lambda model, x: (probabilities, probabilities.max(axis=1)))
    images = pseudo_labelled(Model(), np.arange(3, dtype=np.float32).reshape(3, 1, 1, 1))
    assert images.y.tolist() == [0, 1] and images.x.ravel().tolist() == [0, 2]  # the 0.55 answer is not trusted


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

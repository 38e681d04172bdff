"""adapt_model.py: a trained model, fine-tuned on a few labelled images of a new source."""

import shutil

import numpy as np
import pytest
from conftest import TINY_SIZE, assert_one_line_error

import adapt_model
from semdefect.training.model import KerasClassifier


def labelled_folder(trained, tmp_path, classes=("crack", "via"), per_class=2, split="test"):
    """A few labelled images of two classes, as a user would lay them out (no splits)."""
    folder = tmp_path / "labelled"
    for name in classes:
        (folder / name).mkdir(parents=True)
        for image in sorted((trained["data"] / split / name).glob("*.png"))[:per_class]:
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
    assert '"labelled": 4' in report and '"base_images": 20' in report
    assert "carried over from the base model (too few labelled images to refit them" in report
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
    ("neither", "give labelled images (--data or --labels), unlabelled ones (--unlabelled) or both"),
    ("both", "give the labelled images once"),
    ("case clash", "label 'Via' and the model's class 'via' differ only in case"),
    ("empty class", "class 'flake' has no images"),
    ("single class", "one class only"),
    ("missing file", "line 2: image"),
    ("empty", "no class folders"),
    ("not keras", "the adapted model is a .keras file"),
])
def test_bad_input_exits_2_in_one_line(trained, tmp_path, capsys, case, fragment):
    folder = labelled_folder(trained, tmp_path)
    output = tmp_path / "out.keras"
    args = ["--model", str(trained["keras"]), "--output", str(output), *overrides(trained)]
    if case == "case clash":
        shutil.copytree(folder / "via", folder / "Via")
    if case == "empty class":
        (folder / "flake").mkdir()
    if case == "single class":
        shutil.rmtree(folder / "crack")
        args += ["--classes", "labelled"]
    if case == "empty":
        folder = tmp_path / "empty"
        folder.mkdir()
    if case == "not keras":
        output = tmp_path / "out.onnx"
        args[3] = str(output)
    if case == "missing file":
        labels = tmp_path / "labels.csv"
        labels.write_text("path,label\nnowhere.png,crack\n", encoding="utf-8")
        args += ["--labels", str(labels)]
    elif case != "neither":
        args += ["--data", str(folder)]
    if case == "both":
        args += ["--labels", str(tmp_path / "labels.csv")]
    assert adapt_model.main(args) == 2
    assert_one_line_error(capsys.readouterr().err, fragment)
    assert not output.exists()


def test_a_model_that_is_not_keras_exits_2(trained, tmp_path, capsys):
    args = ["--model", str(trained["onnx"]), "--data", str(labelled_folder(trained, tmp_path)),
            "--output", str(tmp_path / "out.keras")]
    assert adapt_model.main(args) == 2
    assert_one_line_error(capsys.readouterr().err, "expected a .keras")


def test_a_new_class_from_labels_csv_is_appended_and_known_classes_keep_their_weights(trained, tmp_path, capsys):
    folder = labelled_folder(trained, tmp_path, classes=("crack", "particle"))
    rows = ["path,label"] + [f"{p},{p.parent.name}" for p in sorted(folder.rglob("*.png"))]
    rows = [row.replace(",particle", ",Écaille sombre") for row in rows]  # a fab's own class, never learnt
    labels = tmp_path / "labels.csv"
    labels.write_text("\n".join(rows) + "\n", encoding="utf-8")
    out = tmp_path / "adapted.keras"
    code = adapt_model.main(["--model", str(trained["keras"]), "--labels", str(labels), "--output", str(out),
                             "--base-data", str(trained["data"]), *overrides(trained), "adapt.head_epochs=0",
                             "adapt.epochs=0"])
    assert code == 0, capsys.readouterr().err
    base, adapted = KerasClassifier(trained["keras"]), KerasClassifier(out)
    assert adapted.class_names == base.class_names + ["Écaille sombre"]
    old_w, old_b = base.model.get_layer("probabilities").get_weights()
    new_w, new_b = adapted.model.get_layer("probabilities").get_weights()
    np.testing.assert_array_equal(new_w[:, :-1], old_w)  # untrained here: the known classes as they were
    np.testing.assert_array_equal(new_b[:-1], old_b)
    assert np.linalg.norm(new_w[:, -1]) == pytest.approx(np.linalg.norm(old_w, axis=0).mean(), rel=1e-4)
    probabilities = adapted.run(np.zeros((1, TINY_SIZE, TINY_SIZE, 1), np.float32))[0]
    assert probabilities.shape == (1, len(base.class_names) + 1)
    assert '"Écaille sombre"' in capsys.readouterr().out


def test_classes_labelled_answers_exactly_the_labelled_classes(trained, tmp_path, capsys):
    folder = labelled_folder(trained, tmp_path, classes=("crack", "via", "particle"))
    (folder / "particle").rename(folder / "ball defect")
    out = tmp_path / "adapted.keras"
    code = adapt_model.main(["--model", str(trained["keras"]), "--data", str(folder), "--classes", "labelled",
                             "--output", str(out), *overrides(trained)])
    assert code == 0, capsys.readouterr().err
    adapted = KerasClassifier(out)
    assert adapted.class_names == ["ball defect", "crack", "via"]
    assert adapted.model.outputs[0].shape[-1] == 3


def test_the_review_bin_is_refitted_on_held_out_answers_when_labels_allow(trained, tmp_path, capsys):
    folder = labelled_folder(trained, tmp_path, classes=("crack", "via", "particle", "opens"), per_class=6,
                             split="train")
    out = tmp_path / "adapted.keras"
    code = adapt_model.main(["--model", str(trained["keras"]), "--data", str(folder), "--output", str(out),
                             *overrides(trained), "adapt.epochs=0"])  # the last layer only
    assert code == 0, capsys.readouterr().err
    review = KerasClassifier(out).metadata.review
    assert review.held_out == 24 and review != KerasClassifier(trained["keras"]).metadata.review
    assert "refitted on the 24 labelled images" in capsys.readouterr().out

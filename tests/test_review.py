"""The review bin: calibration, the review score and threshold inside the model, and the decision on every path."""

import csv
import json

import numpy as np
import onnx
import pytest
from conftest import assert_one_line_error

import evaluate_model
import infer_onnx
from semdefect.board.errors import ConfigError, ModelError
from semdefect.board.review import REVIEW_KEY, ReviewSettings, calibrate, decisions, review_scores
from semdefect.board.runtime import OnnxClassifier
from semdefect.config import load_config
from semdefect.evaluation.selective import (
    at_threshold,
    aurc,
    auroc,
    choose_threshold,
    fit_temperature,
    softmax,
)
from semdefect.training.train import holdout_indices

# --- calibration and thresholds ------------------------------------------------------------------------------


def test_calibrating_probabilities_equals_softmax_of_the_scaled_logits():
    logits = np.random.default_rng(0).normal(0, 4, (50, 10))
    for temperature in (0.5, 1.0, 1.7, 4.0):
        np.testing.assert_allclose(calibrate(softmax(logits).astype(np.float32), temperature),
                                   softmax(logits, temperature), atol=1e-6)


def test_the_fitted_temperature_is_the_one_the_labels_were_drawn_at():
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 3, (4000, 5))
    labels = np.array([rng.choice(5, p=p) for p in softmax(logits, 2.0)])
    assert fit_temperature(logits, labels) == pytest.approx(2.0, rel=0.1)


def test_the_threshold_meets_the_accuracy_target_at_the_largest_coverage():
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    correct = np.array([1, 1, 1, 0, 1, 0], bool)
    # accuracy of the top k: 1, 1, 1, 3/4, 4/5, 4/6
    assert choose_threshold(scores, correct, "accuracy", 0.8) == 0.5
    assert choose_threshold(scores, correct, "accuracy", 0.9) == 0.7
    assert choose_threshold(scores, correct, "coverage", 0.5) == 0.7
    assert at_threshold(scores, correct, 0.5).coverage == pytest.approx(5 / 6)
    assert choose_threshold(scores, ~correct, "accuracy", 0.99) == 0.9  # unreachable: accept (almost) nothing


def test_tied_scores_are_accepted_or_reviewed_together():
    scores = np.array([0.9, 0.6, 0.6, 0.3])
    correct = np.array([1, 1, 0, 0], bool)
    assert choose_threshold(scores, correct, "accuracy", 0.6) == 0.6  # 2 of 3 right with both tied ones
    assert choose_threshold(scores, correct, "accuracy", 0.9) == 0.9  # not a cut between the two 0.6s


def test_auroc_and_aurc_against_hand_counts():
    assert auroc(np.array([3.0, 2.0]), np.array([1.0, 2.0])) == pytest.approx((2 + 0.5 + 1) / 4)
    assert aurc(np.array([0.9, 0.8, 0.1]), np.array([1, 0, 1], bool)) == pytest.approx((0 + 1 / 2 + 1 / 3) / 3)


def test_scores_and_decisions():
    calibrated = np.array([[0.7, 0.3], [0.4, 0.6]], np.float32)
    np.testing.assert_allclose(review_scores(calibrated), [0.7, 0.6])
    np.testing.assert_allclose(review_scores(calibrated, np.array([0.1, 1.0])), [0.4, 0.8])
    assert decisions(np.array([0.4, 0.8]), 0.5) == ["review", "accept"]
    assert decisions(np.array([0.4, 0.8]), None) == ["accept", "accept"]


def test_the_held_out_share_is_per_class_seeded_and_never_takes_a_whole_class():
    labels = np.array([0] * 20 + [1] * 10 + [2])
    held = holdout_indices(labels, 0.15, seed=3)
    assert np.bincount(labels[held], minlength=3).tolist() == [3, 2, 0]
    assert held.tolist() == holdout_indices(labels, 0.15, seed=3).tolist()
    assert held.tolist() != holdout_indices(labels, 0.15, seed=4).tolist()
    assert holdout_indices(labels, 0.0, seed=3).tolist() == []


# --- the metadata --------------------------------------------------------------------------------------------

GOOD = ReviewSettings(1.5, "msp+agreement", 0.6, "accuracy", 0.9, 100)


def test_review_settings_round_trip():
    assert ReviewSettings.from_json(GOOD.to_json(), "m.onnx") == GOOD


@pytest.mark.parametrize("text, fragment", [
    ("not json", "bad 'review' metadata"),
    ('{"temperature": 1.0}', "expected keys"),
    (GOOD.to_json().replace('"threshold": 0.6', '"threshold": NaN'), "finite numbers"),
    (GOOD.to_json().replace('"temperature": 1.5', '"temperature": -1'), "temperature must be positive"),
    (GOOD.to_json().replace('"msp+agreement"', '"energy"'), "unknown score 'energy'"),
    (GOOD.to_json().replace('"target_value": 0.9', '"target_value": 1.5'), "value in (0, 1]"),
])
def test_malformed_review_metadata_is_refused_naming_the_key(text, fragment):
    with pytest.raises(ModelError) as info:
        ReviewSettings.from_json(text, "m.onnx")
    assert "m.onnx" in str(info.value) and fragment in str(info.value)


@pytest.mark.parametrize("override", ["review.accuracy=1.5", "review.coverage=0", "review.holdout=0.9",
                                      "review.target=recall"])
def test_a_review_target_out_of_range_is_refused(override):
    with pytest.raises(ConfigError) as info:
        load_config(None, [override])
    assert override.split("=")[0] in str(info.value)


# --- the trained model ---------------------------------------------------------------------------------------


def rewrite_review(source, target, value):
    """A copy of an ONNX model whose review metadata is `value` (None: removed, as in a model made before it)."""
    proto = onnx.load(str(source))
    kept = [(p.key, p.value) for p in proto.metadata_props if p.key != REVIEW_KEY]
    del proto.metadata_props[:]
    for key, text in kept + ([(REVIEW_KEY, value)] if value is not None else []):
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, text
    onnx.save(proto, str(target))
    return target


def test_every_model_file_carries_the_same_review_bin(trained):
    from semdefect.training.model import KerasClassifier

    keras_review = KerasClassifier(trained["keras"]).metadata.review
    assert keras_review is not None and keras_review.score == "msp+agreement" and keras_review.held_out == 10
    for key in ("onnx", "int8"):
        assert OnnxClassifier(trained[key]).metadata.review == keras_review


def test_keras_fp32_and_int8_agree_on_scores(trained):
    from semdefect.data.dataset import load_split
    from semdefect.evaluation.scoring import load_classifier, predict_scored

    board = OnnxClassifier(trained["onnx"])
    x = load_split(trained["data"], "test", board.class_names, board.prep).x
    p_keras, s_keras = predict_scored(load_classifier(trained["keras"]), x)
    p_onnx, s_onnx = predict_scored(board, x)
    np.testing.assert_allclose(p_onnx, p_keras, atol=1e-5)
    np.testing.assert_allclose(s_onnx, s_keras, atol=1e-5)
    _, s_int8 = predict_scored(OnnxClassifier(trained["int8"]), x)
    assert np.all((s_int8 >= 0) & (s_int8 <= 1))


def test_the_agreement_output_is_the_share_of_nearest_training_images_with_the_predicted_label(trained):
    import keras

    from semdefect.data.dataset import load_split
    from semdefect.training.model import feature_layer, load_model

    model, metadata = load_model(trained["keras"])
    x = load_split(trained["data"], "test", metadata.class_names, metadata.prep).x
    probabilities, agreement = model.predict_on_batch(x)
    features = keras.Model(model.inputs, model.get_layer(feature_layer(model)).output).predict_on_batch(x)
    layer = model.get_layer("agreement")
    bank, labels = layer.get_weights()
    unit = features / np.sqrt((features ** 2).sum(1, keepdims=True) + 1e-12)
    nearest = np.argsort(-(unit @ bank.T), axis=1, kind="stable")[:, :layer.k]
    expected = (labels.argmax(1)[nearest] == probabilities.argmax(1)[:, None]).mean(1)
    np.testing.assert_allclose(agreement, expected, atol=1e-6)


def test_infer_adds_decision_and_score_and_counts_them(trained, tmp_path, capsys):
    out = tmp_path / "rows.json"
    assert infer_onnx.main(["--model", str(trained["int8"]), str(trained["data"] / "test"), "--output", str(out)]) == 0
    rows = json.loads(out.read_text())
    assert all(r["decision"] in ("accept", "review") and 0 <= r["score"] <= 1 for r in rows)
    reviewed = sum(r["decision"] == "review" for r in rows)
    assert f"({len(rows) - reviewed} accept, {reviewed} review)" in capsys.readouterr().err


@pytest.mark.parametrize("threshold, expected", [("0", "accept"), ("1.01", "review")])
def test_review_threshold_option_overrides_the_models(trained, tmp_path, threshold, expected):
    out = tmp_path / "rows.csv"
    infer_onnx.main(["--model", str(trained["onnx"]), str(trained["data"] / "test"), "--output", str(out),
                     "--review-threshold", threshold])
    with out.open(newline="") as handle:
        assert {row["decision"] for row in csv.DictReader(handle)} == {expected}


def test_a_model_without_review_bin_accepts_everything_with_one_notice(trained, tmp_path, capsys):
    old = rewrite_review(trained["onnx"], tmp_path / "old.onnx", None)
    # a model made before the review bin has no agreement output either: strip it
    proto = onnx.load(str(old))
    del proto.graph.output[1:]
    onnx.save(proto, str(old))
    out = tmp_path / "rows.csv"
    assert infer_onnx.main(["--model", str(old), str(trained["data"] / "test"), "--output", str(out)]) == 0
    err = capsys.readouterr().err
    assert err.count("has no review bin") == 1 and "Traceback" not in err
    with out.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert {r["decision"] for r in rows} == {"accept"} and all(r["score"] == r["confidence"] for r in rows)


@pytest.mark.parametrize("value", ["{broken", '{"temperature": 1}'])
def test_malformed_review_metadata_exits_2_in_one_line(trained, tmp_path, capsys, value):
    bad = rewrite_review(trained["onnx"], tmp_path / "bad.onnx", value)
    assert infer_onnx.main(["--model", str(bad), str(trained["data"] / "test")]) == 2
    assert_one_line_error(capsys.readouterr().err, "bad.onnx", "'review' metadata")
    assert evaluate_model.main(["--model", str(bad), "--data", str(trained["data"]), "--out",
                                str(tmp_path / "ev")]) == 2
    assert_one_line_error(capsys.readouterr().err, "bad.onnx", "'review' metadata")


def test_review_target_out_of_range_stops_training_with_exit_2(trained, capsys):
    import train_model

    assert train_model.main([*trained["overrides"], "review.accuracy=1.2"]) == 2
    assert_one_line_error(capsys.readouterr().err, "review.accuracy")


def test_a_keras_model_whose_outputs_disagree_with_its_review_metadata_is_refused(trained, tmp_path):
    from semdefect.training.model import KerasClassifier, classifier_part, load_model, save_model

    model, metadata = load_model(trained["keras"])
    save_model(classifier_part(model), tmp_path / "headless.keras", metadata)
    with pytest.raises(ModelError, match=r"headless\.keras: its review metadata says score msp\+agreement"):
        KerasClassifier(tmp_path / "headless.keras")


def test_the_bank_is_stored_in_float16_in_every_file(trained):
    from onnx import TensorProto

    from semdefect.training.model import load_model

    model, _ = load_model(trained["keras"])
    assert model.get_layer("agreement").get_weights()[0].dtype == np.float16
    for key in ("onnx", "int8"):
        graph = onnx.load(str(trained[key])).graph
        halves = [t for t in graph.initializer if t.data_type == TensorProto.FLOAT16]
        assert len(halves) == 1 and any(n.op_type == "Cast" and n.input[0] == halves[0].name for n in graph.node)

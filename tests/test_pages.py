"""The labelling page (label_images.py) in a real headless Chromium, and `apply`."""

import csv
import json
import shutil

import numpy as np
import pytest
from browser import console_errors, start, wait_for_file
from conftest import TINY_SIZE, assert_one_line_error
from PIL import Image
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

import adapt_model
import evaluate_model
import label_images
from semdefect.training.model import KerasClassifier

CLASSES = ["Bridge", "crack", "particle", "via"]


def rows_csv(tmp_path, images):
    """An infer_onnx.py CSV: the second image was sent to review, the last could not be read."""
    path = tmp_path / "rows.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "confidence", "top3", "status", "error", "decision", "score"])
        for i, image in enumerate(images):
            status = "error" if i == len(images) - 1 else "ok"
            top3 = "" if status == "error" else f"{CLASSES[i % 4]}:0.700 {CLASSES[(i + 1) % 4]}:0.200 via:0.100"
            writer.writerow([image, CLASSES[i % 4] if top3 else "", "0.7000" if top3 else "", top3, status,
                             "cannot read" if status == "error" else "", "review" if i == 1 else "accept", "0.6"])
    return path


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "incoming"
    folder.mkdir()
    paths = []
    for i in range(5):
        path = folder / f"image {i}.png"
        Image.fromarray(np.full((40, 60), 40 * i, np.uint8)).save(path)
        paths.append(path)
    broken = folder / "broken.png"
    broken.write_bytes(b"not a png")
    return paths + [broken]


def test_labelling_page_labels_by_key_and_new_class_saves_and_reopens(tmp_path, images):
    page = tmp_path / "labels.html"
    assert label_images.main([str(rows_csv(tmp_path, images)), "--output", str(page)]) == 0
    profile, downloads = tmp_path / "profile", tmp_path / "downloads"
    driver = start(profile, downloads)
    try:
        driver.get(page.as_uri())
        assert driver.find_element(By.ID, "path").text == str(images[1])  # the review row comes first
        body = driver.find_element(By.TAG_NAME, "body")
        body.send_keys("1")  # Bridge
        body.send_keys("2")  # crack
        body.send_keys(Keys.ARROW_RIGHT)  # skip one
        body.send_keys("4")  # via
        box = driver.find_element(By.ID, "new-class")
        box.send_keys("Écaille sombre", Keys.ENTER)
        assert "4 of 6 labelled" in driver.find_element(By.ID, "progress").text
        driver.find_element(By.ID, "save").click()
        saved = wait_for_file(downloads / "labels.csv")
        assert console_errors(driver) == []
    finally:
        driver.quit()
    with saved.open(newline="", encoding="utf-8-sig") as handle:
        labelled = {row["path"]: row["label"] for row in csv.DictReader(handle)}
    # page order: the review row (images[1]), then the accepted rows, then the unreadable one
    assert labelled == {str(images[1]): "Bridge", str(images[0]): "crack", str(images[3]): "via",
                        str(images[4]): "Écaille sombre"}

    driver = start(profile, downloads)  # the same browser profile: the labels are still there
    try:
        driver.get(page.as_uri())
        assert "4 of 6 labelled" in driver.find_element(By.ID, "progress").text
        buttons = [b.get_attribute("data-name") for b in driver.find_elements(By.CSS_SELECTOR, "#classes button")]
        assert buttons == CLASSES + ["Écaille sombre"]
        driver.find_element(By.ID, "back").click()  # onto the unreadable image: a named placeholder
        driver.find_element(By.ID, "skip").click()
        while driver.find_element(By.ID, "path").text != str(images[5]):
            driver.find_element(By.ID, "skip").click()
        assert "cannot read" in driver.find_element(By.CSS_SELECTOR, "#view .placeholder").text
        assert console_errors(driver) == []
    finally:
        driver.quit()


@pytest.mark.slow
def test_saved_labels_teach_adapt_model_a_new_class(trained, tmp_path):
    pool = tmp_path / "pool"
    shutil.copytree(trained["data"] / "test", pool)
    page = tmp_path / "labels.html"
    assert label_images.main([str(pool), "--model", str(trained["keras"]), "--output", str(page)]) == 0
    downloads = tmp_path / "downloads"
    driver = start(tmp_path / "profile", downloads)
    try:
        driver.get(page.as_uri())
        assert "Model: " in driver.find_element(By.ID, "guess").text  # the model's top 3 beside the image
        body = driver.find_element(By.TAG_NAME, "body")
        for key in "1234":
            body.send_keys(key)
        for _ in range(4):
            driver.find_element(By.ID, "new-class").send_keys("ball defect", Keys.ENTER)
        driver.find_element(By.ID, "save").click()
        saved = wait_for_file(downloads / "labels.csv")
    finally:
        driver.quit()
    out = tmp_path / "adapted.keras"
    assert adapt_model.main(["--model", str(trained["keras"]), "--labels", str(saved), "--output", str(out),
                             "--base-data", str(trained["data"]), f"data.image_size={TINY_SIZE}", "adapt.epochs=1",
                             "adapt.base_per_class=2"]) == 0
    assert KerasClassifier(out).class_names[-1] == "ball defect"


def test_apply_copies_labelled_images_into_class_folders(tmp_path, images):
    labels = tmp_path / "labels.csv"
    labels.write_text(f"path,label\n{images[0]},crack\n\"{images[1]}\",Écaille sombre\n", encoding="utf-8")
    out = tmp_path / "classes"
    assert label_images.main(["apply", str(labels), "--output", str(out)]) == 0
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*.png")) == ["crack/image 0.png",
                                                                           "Écaille sombre/image 1.png"]
    assert label_images.main(["apply", str(labels), "--output", str(out)]) == 0  # again: nothing doubled
    assert len(list(out.rglob("*.png"))) == 2


@pytest.mark.parametrize("content, fragment", [
    ("path,label\nnowhere.png,crack\n", "line 2: image"),
    ("path,label\n{image},\n", "line 2: empty label"),
])
def test_apply_refuses_bad_rows_in_one_line(tmp_path, images, capsys, content, fragment):
    labels = tmp_path / "labels.csv"
    labels.write_text(content.format(image=images[0]), encoding="utf-8")
    assert label_images.main(["apply", str(labels), "--output", str(tmp_path / "out")]) == 2
    assert_one_line_error(capsys.readouterr().err, fragment)


def open_report(tmp_path, folder):
    driver = start(tmp_path / "profile", tmp_path / "downloads")
    driver.get((folder / "report.html").as_uri())
    return driver


@pytest.mark.slow
def test_report_gallery_holds_the_misclassified_images_and_a_cell_click_filters_it(trained, tmp_path):
    out = tmp_path / "eval"
    assert evaluate_model.main(["--model", str(trained["keras"]), "--out", str(out), *trained["overrides"]]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    with (out / "predictions.csv").open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    wrong = sorted(r["path"] for r in rows if r["true_label"] != r["label"])
    review = sorted(r["path"] for r in rows if r["decision"] == "review")
    driver = open_report(tmp_path, out)
    try:
        cards = driver.find_elements(By.CSS_SELECTOR, "#gallery .card")
        assert sorted(c.find_element(By.CLASS_NAME, "path").text for c in cards) == wrong
        assert all(len(c.find_elements(By.CSS_SELECTOR, "img.heat")) == 1 for c in cards)  # Keras: heat maps
        reviewed = driver.find_elements(By.CSS_SELECTOR, "#review .card .path")
        assert sorted(p.text for p in reviewed) == review
        matrix = np.array(metrics["confusion_matrix"])
        np.fill_diagonal(matrix, 0)
        true, predicted = np.unravel_index(matrix.argmax(), matrix.shape)  # the largest off-diagonal cell
        driver.find_element(By.CSS_SELECTOR, f"#confusion td[data-true='{true}'][data-pred='{predicted}']").click()
        cards = driver.find_elements(By.CSS_SELECTOR, "#gallery .card")
        assert len(cards) == matrix[true, predicted] > 0
        assert {(int(c.get_attribute("data-true")), int(c.get_attribute("data-pred"))) for c in cards} == \
            {(true, predicted)}
        diagonal = driver.find_element(By.CSS_SELECTOR, "#confusion td[data-true='0'][data-pred='0']")
        diagonal.click()  # a right answer's cell shows those images too
        assert len(driver.find_elements(By.CSS_SELECTOR, "#gallery .card")) == metrics["confusion_matrix"][0][0]
        summary = driver.find_element(By.ID, "summary").text
        assert f"{100 * metrics['accuracy']:.1f} %" in summary and "ECE" in summary
        assert len(driver.find_elements(By.CSS_SELECTOR, "#plots img")) == 2
        assert console_errors(driver) == []
    finally:
        driver.quit()
    assert "http" not in (out / "report.html").read_text(encoding="utf-8")  # nothing fetched from anywhere


@pytest.mark.slow
def test_onnx_report_has_heat_maps_only_with_cam_model_and_caps_inlined_images(trained, tmp_path, capsys):
    plain, with_cam = tmp_path / "plain", tmp_path / "cam"
    assert evaluate_model.main(["--model", str(trained["onnx"]), "--out", str(plain), *trained["overrides"],
                                "report.max_images=3"]) == 0
    assert evaluate_model.main(["--model", str(trained["onnx"]), "--cam-model", str(trained["keras"]), "--out",
                                str(with_cam), *trained["overrides"]]) == 0
    driver = open_report(tmp_path, plain)
    try:
        assert "No heat maps" in driver.find_element(By.ID, "cam-note").text
        assert not driver.find_elements(By.CSS_SELECTOR, "img.heat")
        with (plain / "predictions.csv").open(newline="", encoding="utf-8") as handle:
            wrong = sum(r["true_label"] != r["label"] for r in csv.DictReader(handle))
        cards = len(driver.find_elements(By.CSS_SELECTOR, "#gallery .card"))
        listed = len(driver.find_elements(By.CSS_SELECTOR, "#gallery-paths li:not(.note)"))
        assert cards == min(3, wrong) and cards + listed == wrong  # the misclassified are inlined first
        driver.get((with_cam / "report.html").as_uri())
        assert driver.find_elements(By.CSS_SELECTOR, "#gallery img.heat")
        assert console_errors(driver) == []
    finally:
        driver.quit()
    capsys.readouterr()
    assert evaluate_model.main(["--model", str(trained["onnx"]), "--cam-model", str(trained["int8"]), "--out",
                                str(tmp_path / "bad"), *trained["overrides"]]) == 2
    assert_one_line_error(capsys.readouterr().err, "expected a .keras model file")

"""The review queue in a real LabelMe window (offscreen): states and scores in the file list, the
next image to review, and confirming likely defect-free images from their thumbnails."""

from __future__ import annotations

import json
from pathlib import Path

from qtpy import QtCore

from labelme_dsarad.model.scoring import BULK_CONFIRM_BELOW, ScoreNormaliser
from labelme_dsarad.pipeline import PredictOptions, predict_paths

from .test_gui_panel import WAIT, fake_option, ready
from .test_gui_support import FakePredictor, write_sample_images

CUT = 0.5


def predicted_folder(folder: Path) -> tuple[list[Path], list[Path], FakePredictor]:
    """Two images with a bright square (score 0.85, one suggestion each) and two without (score
    about 0.2, none), their label files written by a run; the model's cut for bulk confirmation 0.5."""
    defective = write_sample_images(folder / "defective", 2)
    quiet = write_sample_images(folder / "quiet", 2, squares=0)
    images = []
    for index, path in enumerate(defective + quiet):
        images.append(path.rename(folder / f"{'dq'[index // 2]}_{path.name}"))
    predictor = FakePredictor()
    predictor.model.info.normaliser = ScoreNormaliser(0.5, 0.5, {BULK_CONFIRM_BELOW: CUT})
    predict_paths(images, None, PredictOptions(), predictor=predictor)  # type: ignore[arg-type]  # a look-alike
    return images[:2], images[2:], predictor


def test_the_file_list_shows_each_images_state_and_score_and_n_opens_the_likeliest(qtbot, tmp_path, make_window):
    defective, quiet, predictor = predicted_folder(tmp_path)
    window, panel = make_window([fake_option(predictor)], open_path=tmp_path, flags=["ok"])
    window.show()
    qtbot.waitExposed(window)
    window.activateWindow()
    ready(qtbot, panel)
    states = {Path(path).name: (entry.state, entry.score) for path, entry in panel.queue.entries.items()}
    assert {name: state for name, (state, _) in states.items()} == {
        defective[0].name: "1 pending", defective[1].name: "1 pending", quiet[0].name: "new", quiet[1].name: "new"}
    assert all(score > 0.8 for name, (_, score) in states.items() if name.startswith("d_"))
    assert all(score < 0.3 for name, (_, score) in states.items() if name.startswith("q_"))
    window.resize(1280, 800)
    window.grab().save(str(tmp_path / "file_list.png"))

    panel.adapter.open_file(str(quiet[1]))
    qtbot.keyClick(window, QtCore.Qt.Key_N)  # Next to review
    first = panel.adapter.image_path()
    assert Path(first) in defective
    panel.view.next_to_review_action.trigger()
    assert {Path(first), Path(panel.adapter.image_path())} == set(defective)


def test_bulk_confirmation_marks_the_selected_quiet_images_reviewed(qtbot, tmp_path, make_window):
    defective, quiet, predictor = predicted_folder(tmp_path)
    window, panel = make_window([fake_option(predictor)], open_path=tmp_path, flags=["ok"])
    ready(qtbot, panel)
    dialog = panel.queue.bulk_confirm()
    assert dialog is not None
    assert [entry.image.name for entry in dialog.shown()] == sorted(
        (path.name for path in quiet), key=lambda name: panel.queue.entries[str(tmp_path / name)].score)
    assert len(dialog.grid.selectedItems()) == 2 and dialog.confirm_button.text() == "Confirm 2 images defect-free"
    qtbot.waitUntil(lambda: dialog.maps_shown == 2, timeout=WAIT)  # each thumbnail under its heat map
    dialog.grab().save(str(tmp_path / "bulk_confirm.png"))
    dialog.grid.item(0).setSelected(False)  # the person sees something on the lowest one
    kept = dialog.shown()[0]
    dialog.confirm_button.click()
    for path in quiet:
        data = json.loads(path.with_suffix(".json").read_text())
        assert (data["flags"].get("ok") is True) == (path != kept.image)
    assert panel.queue.entry_of(str(kept.image)).state == "new"
    for path in defective:  # above the cut: never offered, never touched
        assert json.loads(path.with_suffix(".json").read_text())["flags"].get("ok") is not True

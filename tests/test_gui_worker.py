"""The inference thread on its own: queueing, cancelling, failures, GPU fallback."""

from __future__ import annotations

import time

import cv2

from labelme_dsarad.model.model_file import ModelFileError
from labelme_dsarad.model.polygons import SuggestionSettings
from labelme_dsarad.worker import PRIORITY_LOOKAHEAD, DetectionWorker, Job

from .test_gui_support import FakePredictor, fake_factory, write_sample_images


def started_worker(qtbot, factory):
    worker = DetectionWorker()
    worker.set_model(factory)
    with qtbot.waitSignal(worker.model_ready, timeout=10000):
        worker.start()
    return worker


def test_one_job_per_image_and_switching_drops_queued_work(qtbot, tmp_path):
    images = [str(path) for path in write_sample_images(tmp_path, 4)]
    predictor = FakePredictor(delay=0.3)
    worker = started_worker(qtbot, fake_factory(predictor))
    finished = []
    worker.result_ready.connect(lambda result: finished.append(result.job.path))
    try:
        assert worker.submit(Job(images[0]))
        qtbot.waitUntil(lambda: worker.running_path() == images[0], timeout=5000)
        assert not worker.submit(Job(images[0])), "a second job for a running image"
        assert worker.submit(Job(images[1], PRIORITY_LOOKAHEAD))
        assert worker.submit(Job(images[2]))
        assert not worker.submit(Job(images[2])), "a second job for a queued image"
        dropped = worker.keep_only({images[2], images[3]})  # the user moved to image 2
        assert [job.path for job in dropped] == [images[1]]
        qtbot.waitUntil(lambda: len(finished) == 2, timeout=10000)
        qtbot.wait(400)  # nothing else may arrive
        assert finished == [images[0], images[2]]
        assert len(predictor.calls) == 2
    finally:
        worker.stop()


def test_current_image_runs_before_look_ahead(qtbot, tmp_path):
    images = [str(path) for path in write_sample_images(tmp_path, 3)]
    worker = started_worker(qtbot, fake_factory(FakePredictor(delay=0.2)))
    order = []
    worker.result_ready.connect(lambda result: order.append(result.job.path))
    try:
        worker.submit(Job(images[0]))
        qtbot.waitUntil(lambda: worker.running_path() == images[0], timeout=5000)
        worker.submit(Job(images[1], PRIORITY_LOOKAHEAD))
        worker.submit(Job(images[2]))
        qtbot.waitUntil(lambda: len(order) == 3, timeout=10000)
        assert order == [images[0], images[2], images[1]]
    finally:
        worker.stop()


def test_broken_model_and_unreadable_image_are_messages(qtbot, tmp_path):
    images = write_sample_images(tmp_path, 1)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")

    def factory(device):
        raise ModelFileError(tmp_path / "model.safetensors", "corrupt safetensors data")

    worker = DetectionWorker()
    worker.set_model(factory)
    try:
        with qtbot.waitSignal(worker.model_failed, timeout=10000) as failed:
            worker.start()
        assert "corrupt safetensors data" in failed.args[0]
        with qtbot.waitSignal(worker.job_failed, timeout=10000) as job_failed:
            worker.submit(Job(str(images[0])))
        assert "corrupt safetensors data" in job_failed.args[1]

        with qtbot.waitSignal(worker.model_ready, timeout=10000):
            worker.set_model(fake_factory(FakePredictor()))
        with qtbot.waitSignal(worker.job_failed, timeout=10000) as job_failed:
            worker.submit(Job(str(broken)))
        assert job_failed.args[1].startswith("broken.png: cannot read the image")
        assert worker.isRunning(), "the thread survives every failure"
        with qtbot.waitSignal(worker.result_ready, timeout=10000):
            worker.submit(Job(str(images[0])))
    finally:
        worker.stop()


def test_large_photo_is_decoded_reduced_and_its_result_speaks_of_the_photo(qtbot, tmp_path):
    from shapely.geometry import Polygon

    from .test_large_photo import DEFECT, HEIGHT, WIDTH, assert_on_the_defect, photo_with_defect

    path = tmp_path / "photo.jpg"
    assert cv2.imwrite(str(path), photo_with_defect())
    predictor = FakePredictor()
    worker = started_worker(qtbot, fake_factory(predictor))
    try:
        submitted = time.perf_counter()
        with qtbot.waitSignal(worker.result_ready, timeout=10000) as ready:
            worker.submit(Job(str(path)))
        result = ready.args[0]
        assert predictor.calls == [(HEIGHT // 8, WIDTH // 8, 3)], "the model saw the reduced image"
        assert result.image_shape == (HEIGHT, WIDTH), "the panel compares it with LabelMe's picture"
        suggestion, = result.prediction.suggestions(SuggestionSettings(), "defect")
        assert_on_the_defect(Polygon(suggestion.region.points), 8)
        assert suggestion.region.bbox[0] >= DEFECT[0] - 8
        assert 0 < result.seconds <= time.perf_counter() - submitted
    finally:
        worker.stop()


def test_gpu_out_of_memory_falls_back_to_cpu(qtbot, tmp_path):
    images = write_sample_images(tmp_path, 1)
    built = []

    def factory(device):
        if device == "cpu":
            predictor = FakePredictor()
        else:  # stands in for CUDA: too little memory for this image (onnxruntime's words; PyTorch's say it too)
            predictor = FakePredictor(device_name="cuda", fail_with=RuntimeError("CUDA failure 2: out of memory"))
        built.append(device)
        return predictor

    worker = started_worker(qtbot, factory)
    notices = []
    worker.notice.connect(notices.append)
    try:
        with qtbot.waitSignal(worker.result_ready, timeout=10000) as ready:
            worker.submit(Job(str(images[0])))
        assert ready.args[0].prediction.device == "cpu"
        assert built == ["auto", "cpu"]
        qtbot.waitUntil(lambda: notices == ["GPU out of memory: switched to the CPU"], timeout=2000)
    finally:
        worker.stop()

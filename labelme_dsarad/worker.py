"""The inference thread: owns the model, runs one job at a time, never blocks the UI.

The UI thread only ever touches the job queue (under a lock held for a few
list operations) and receives results through queued Qt signals, so a model
that takes seconds leaves the event loop free. Jobs are keyed by image path:
asking again for an image that is queued or running adds nothing, and
``keep_only`` drops queued work for images the user has moved away from.
A running inference cannot be interrupted; its result still arrives and the
panel decides whether it is stale.
"""

from __future__ import annotations

import itertools
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from qtpy import QtCore

from labelme_dsarad.model.devices import DEFAULT_DEVICE

if TYPE_CHECKING:
    from labelme_dsarad.model.images import ReducedImage
    from labelme_dsarad.model.inference import Prediction, Predictor
    from labelme_dsarad.model.model_file import ModelInfo
    from labelme_dsarad.pipeline import PredictOptions

# Lower runs first: what the user is looking at beats what we guess comes next.
PRIORITY_CURRENT = 0
PRIORITY_LOOKAHEAD = 1

PredictorFactory = Callable[[str], "Predictor"]  # device name -> predictor on that device


@dataclass
class Job:
    path: str
    priority: int = PRIORITY_CURRENT
    # Bytes LabelMe already holds (label file with embedded image data): used
    # when the image file itself cannot be read.
    image_bytes: bytes | None = None
    id: int = field(default_factory=itertools.count(1).__next__)


@dataclass
class BatchJob:
    images: list[Path]
    options: PredictOptions
    cancel: threading.Event = field(default_factory=threading.Event)
    id: int = field(default_factory=itertools.count(1).__next__)


@dataclass
class JobResult:
    job: Job
    prediction: Prediction  # its suggestions in the photo's pixels
    image_shape: tuple[int, int]  # (height, width) of the photo as LabelMe shows it
    model_key: str
    seconds: float = 0.0  # the job's time here: decoding, the model and its map


@dataclass
class ModelDescription:
    """What the panel shows about the model in use; built in the worker thread."""

    key: str  # identifies the weights, so cached maps of another model are never reused
    name: str
    device: str
    info: ModelInfo | None = None  # when the predictor has one


def one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def is_out_of_memory(error: BaseException) -> bool:
    import sys

    # PyTorch only where it is installed and in use; onnxruntime's CUDA provider says it in words.
    torch_error = getattr(getattr(sys.modules.get("torch"), "cuda", None), "OutOfMemoryError", None)
    return (torch_error is not None and isinstance(error, torch_error)) or "out of memory" in str(error).lower()


def default_factory(model_path: Path) -> PredictorFactory:
    def build(device: str):
        from labelme_dsarad.model.inference import Predictor

        return Predictor(model_path, device=device)

    return build


def decode_image(job: Job, at_least: int, most: int) -> ReducedImage:
    """The image as LabelMe shows it, reduced to what the model needs (``working_size``): the
    file, else the bytes LabelMe loaded. LabelMe decodes the file in full for its canvas; we decode
    it again, in the worker, at a fraction of the size."""
    from labelme_dsarad.model.images import read_image_reduced, reduce

    try:
        return read_image_reduced(job.path, at_least, most)
    except Exception:
        if job.image_bytes is None:
            raise
    import io

    from PIL import Image, ImageOps

    with Image.open(io.BytesIO(job.image_bytes)) as image:
        return reduce(np.asarray(ImageOps.exif_transpose(image).convert("RGB")), at_least, most)


class DetectionWorker(QtCore.QThread):
    """One thread, one model; results and failures come back as signals."""

    model_ready = QtCore.Signal(object)  # ModelDescription
    model_failed = QtCore.Signal(str)
    result_ready = QtCore.Signal(object)  # JobResult
    job_failed = QtCore.Signal(object, str)  # Job, one-line message
    notice = QtCore.Signal(str)  # something the user should know, not a failure
    batch_progress = QtCore.Signal(int, int, str)  # done, total, path
    batch_finished = QtCore.Signal(object, object)  # BatchJob, pipeline.Summary
    batch_failed = QtCore.Signal(object, str)

    def __init__(self, parent: QtCore.QObject | None = None):
        super().__init__(parent)
        self._condition = threading.Condition()
        self._queue: list[Job] = []
        self._batch: BatchJob | None = None
        self._running_path: str | None = None
        self._factory: PredictorFactory | None = None
        self._factory_changed = False
        self._model_error: str | None = None
        self._stopping = False
        self._predictor: Predictor | None = None
        self._model_key = ""
        self._factory_for_fallback: PredictorFactory | None = None

    # --- called from the UI thread: never waits on inference ---

    def set_model(self, factory: PredictorFactory | None) -> None:
        """Load (in the thread) the model the factory builds; queued jobs wait for it."""
        with self._condition:
            self._factory = factory
            self._factory_changed = True
            self._model_error = None
            self._condition.notify()

    def submit(self, job: Job) -> bool:
        """Queue a job unless one for the same image is queued or running.

        A repeated request may raise the queued job's priority (a look-ahead
        the user has now opened). Returns whether anything was queued.
        """
        with self._condition:
            if job.path == self._running_path:
                return False
            for queued in self._queue:
                if queued.path == job.path:
                    queued.priority = min(queued.priority, job.priority)
                    queued.image_bytes = queued.image_bytes or job.image_bytes
                    return False
            self._queue.append(job)
            self._condition.notify()
            return True

    def keep_only(self, paths: set[str]) -> list[Job]:
        """Drop queued jobs for other images; return the dropped ones."""
        with self._condition:
            dropped = [job for job in self._queue if job.path not in paths]
            self._queue = [job for job in self._queue if job.path in paths]
            return dropped

    def running_path(self) -> str | None:
        with self._condition:
            return self._running_path

    def pending_count(self) -> int:
        with self._condition:
            return len(self._queue) + (self._running_path is not None) + (self._batch is not None)

    def submit_batch(self, batch: BatchJob) -> None:
        with self._condition:
            self._batch = batch
            self._condition.notify()

    def stop(self, timeout_ms: int = 30000) -> None:
        """Ask the thread to end after its current job and wait for it."""
        with self._condition:
            self._stopping = True
            self._queue.clear()
            if self._batch is not None:
                self._batch.cancel.set()
            self._condition.notify()
        self.wait(timeout_ms)

    # --- the thread ---

    def run(self) -> None:
        while True:
            with self._condition:
                while not self._stopping and not self._factory_changed and not self._has_work():
                    self._condition.wait()
                if self._stopping:
                    break
                if self._factory_changed:
                    factory, self._factory_changed = self._factory, False
                    action: tuple[str, object] = ("model", factory)
                elif self._batch is not None and not self._queue:
                    action = ("batch", self._batch)
                else:
                    self._queue.sort(key=lambda queued: (queued.priority, queued.id))
                    job = self._queue.pop(0)
                    self._running_path = job.path
                    action = ("job", job)
            try:
                self._perform(*action)
            except BaseException as error:  # noqa: BLE001 - a thread must never die: LabelMe quits on uncaught errors
                traceback.print_exc()
                if action[0] == "job":
                    self.job_failed.emit(action[1], f"unexpected error: {one_line(error)}")
            finally:
                with self._condition:
                    self._running_path = None
                    if action[0] == "batch":
                        self._batch = None
        self._predictor = None

    def _has_work(self) -> bool:
        # Without a usable model, jobs wait rather than fail one by one.
        return (self._predictor is not None or self._model_error is not None) and (
            bool(self._queue) or self._batch is not None
        )

    def _perform(self, kind: str, payload) -> None:
        if kind == "model":
            self._load(payload)
        elif kind == "job":
            self._run_job(payload)
        else:
            self._run_batch(payload)

    def _load(self, factory: PredictorFactory | None) -> None:
        self._predictor = None
        if factory is None:
            self._fail_model("no model: name one with --model, or train one with 'dsarad train'")
            return
        try:
            self._predictor = factory(DEFAULT_DEVICE)
        except Exception as error:  # noqa: BLE001 - broken file, missing weights, driver trouble: all a message
            self._fail_model(one_line(error))
            return
        self._factory_for_fallback = factory
        self._model_key = model_key(self._predictor)
        self.model_ready.emit(self._describe())

    def _fail_model(self, message: str) -> None:
        with self._condition:
            self._model_error = message
        self.model_failed.emit(message)

    def _describe(self) -> ModelDescription:
        model = getattr(self._predictor, "model", None)
        return ModelDescription(
            key=self._model_key,
            name=str(getattr(self._predictor, "name", "model")),
            device=self._device_type(),
            info=getattr(model, "info", None),
        )

    def _run_job(self, job: Job) -> None:
        if self._predictor is None:
            self.job_failed.emit(job, self._model_error or "no model loaded")
            return
        from labelme_dsarad.model.inference import largest_reduction, working_size

        started = time.perf_counter()
        architecture = self._predictor.model.info.architecture
        try:
            image = decode_image(job, working_size(architecture.input_size), largest_reduction(architecture.scale))
        except Exception as error:  # noqa: BLE001 - every decode failure is one message about this file
            self.job_failed.emit(job, f"{Path(job.path).name}: cannot read the image ({one_line(error)})")
            return
        try:
            prediction = self._predict(image.pixels, image.shape).for_photo(image.shape)
        except Exception as error:  # noqa: BLE001
            self.job_failed.emit(job, f"{Path(job.path).name}: inference failed ({one_line(error)})")
            return
        self.result_ready.emit(JobResult(job, prediction, image.shape, self._model_key, time.perf_counter() - started))

    def _predict(self, image: np.ndarray, photo_shape: tuple[int, int]):
        assert self._predictor is not None  # _run_job checked
        try:
            return self._predictor.predict(image, photo_shape)
        except Exception as error:
            if not is_out_of_memory(error) or self._device_type() == "cpu":
                raise
        # Out of GPU memory (a big image, another process): the CPU is slower
        # but always there. Stay on it; the next model load tries the GPU again.
        self._release_gpu_memory()
        started = time.perf_counter()
        assert self._factory_for_fallback is not None  # set by the _load that made the predictor
        self._predictor = self._factory_for_fallback("cpu")
        self.notice.emit("GPU out of memory: switched to the CPU")
        self.model_ready.emit(self._describe())
        prediction = self._predictor.predict(image, photo_shape)
        prediction.seconds = max(prediction.seconds, time.perf_counter() - started)
        return prediction

    def _device_type(self) -> str:
        return str(getattr(self._predictor, "device", "cpu"))

    def _release_gpu_memory(self) -> None:
        self._predictor = None
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except Exception:  # noqa: BLE001 - best effort only
            pass

    def _run_batch(self, batch: BatchJob) -> None:
        if self._predictor is None:
            self.batch_failed.emit(batch, self._model_error or "no model loaded")
            return
        from labelme_dsarad.pipeline import predict_paths

        try:
            summary = predict_paths(
                batch.images,
                None,
                batch.options,
                predictor=self._predictor,
                progress=lambda done, total, path: self.batch_progress.emit(done, total, str(path)),
                cancelled=batch.cancel.is_set,
            )
        except Exception as error:  # noqa: BLE001
            traceback.print_exc()
            self.batch_failed.emit(batch, one_line(error))
            return
        self.batch_finished.emit(batch, summary)


def model_key(predictor) -> str:
    model = getattr(predictor, "model", None)
    return str(getattr(model, "sha256", None) or id(predictor))

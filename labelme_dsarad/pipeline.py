"""Pre-annotate many images: the one pipeline behind ``dsarad predict`` and "Detect all".

Decoding runs ahead in a thread pool and polygons plus JSON writing run in a
writer thread, so inference (which releases the GIL) never waits on disk.
One image failing, for whatever reason, is reported by file and the batch
goes on; only a problem with the whole run (the model, the options) stops it.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PureWindowsPath

import cv2
import numpy as np

from labelme_dsarad.model.atomic_write import write_atomically
from labelme_dsarad.model.devices import DEFAULT_DEVICE
from labelme_dsarad.model.images import ImageReadError, ReducedImage, read_image_reduced
from labelme_dsarad.model.inference import Prediction, Predictor, largest_reduction, working_size
from labelme_dsarad.model.labelfile import (
    RECORD_KEY,
    REJECTED_KEY,
    SUGGESTED_KEY,
    LabelFileError,
    is_reviewed,
    label_path_for,
    load_label_file,
    remove_stale_temporaries,
    suggestion_shape,
    update_label_file,
)
from labelme_dsarad.model.polygons import SuggestionSettings
from labelme_dsarad.model.scoring import NORMALISED_THRESHOLD
from labelme_dsarad.review_queue import IMAGE_SCORE_KEY

DECODE_AHEAD = 4


@dataclass
class PredictOptions:
    suggestions: SuggestionSettings = field(default_factory=SuggestionSettings)
    out_dir: Path | None = None
    maps_dir: Path | None = None
    bare_maps: bool = False  # maps alone, not drawn over the photo with a colour bar
    batch_size: int = 1
    # Skip images whose label file already holds this model's results with
    # these settings, so a rerun after an interruption finishes the rest.
    skip_done: bool = True
    # Images a person marked reviewed (image flag 'ok') are left alone unless asked.
    include_reviewed: bool = False

    def check(self) -> None:
        """ValueError for settings no run can use."""
        self.suggestions.check()
        if self.batch_size < 1:
            # 0 would never fill a batch: the run would spin for ever.
            raise ValueError(f"batch size must be 1 or more, got {self.batch_size}")


@dataclass
class Summary:
    images: int = 0
    predicted: int = 0
    skipped: int = 0
    reviewed: int = 0  # left alone: a person marked them reviewed
    suggestions: int = 0
    images_with_defects: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    device: str = ""
    cancelled: bool = False

    def describe(self) -> str:
        reviewed = f"{self.reviewed} reviewed (left alone), " if self.reviewed else ""
        lines = [
            f"{self.images} images: {self.predicted} predicted, {self.skipped} already done, {reviewed}"
            f"{len(self.failures)} failed; {self.suggestions} suggested defects on {self.images_with_defects} images; "
            f"{self.seconds:.1f} s on {self.device or 'cpu'}" + (" (cancelled)" if self.cancelled else "")
        ]
        lines += [f"failed: {message}" for _, message in self.failures]
        return "\n".join(lines)


def run_record(predictor: Predictor, options: PredictOptions) -> dict:
    """What a label file records about the run that wrote its suggestions."""
    return {
        "model": predictor.name,
        "model_sha256": predictor.model.sha256,
        "threshold": options.suggestions.threshold,
        "min_area": options.suggestions.min_area,
        "tolerance": options.suggestions.tolerance,
        "opening": options.suggestions.opening,
        "extend_to": options.suggestions.extend_to,
        # only when given, so that files written before there was one still count as this run's
        **({"min_peak": options.suggestions.min_peak} if options.suggestions.min_peak is not None else {}),
    }


def label_status(label_path: Path, record: dict, image_path: Path | None = None) -> str | None:
    """"reviewed" when a person marked the image reviewed, "done" when its label file holds this
    run's results already, else None (to predict, or to report when the merge fails)."""
    if not label_path.is_file():
        return None
    try:
        data = load_label_file(label_path)
    except LabelFileError:
        return None  # reported when we try to merge into it
    stored_image = data.get("imagePath")
    if image_path is not None and isinstance(stored_image, str) and stored_image:
        # a.jpg next to a.png shares a.json: its record says nothing about a.jpg
        # (the merge then reports the clash). Names compare as labelfile does.
        if PureWindowsPath(stored_image).name.casefold() != Path(image_path).name.casefold():
            return None
    if is_reviewed(data):
        return "reviewed"
    previous = data.get(RECORD_KEY)
    run = {key: value for key, value in record.items() if key not in (SUGGESTED_KEY, REJECTED_KEY)}
    done = isinstance(previous, dict) and all(previous.get(key) == value for key, value in run.items())
    return "done" if done else None


def one_line_failure(image_path: Path, problem: BaseException) -> str:
    """Our own errors already read "file: problem"; anything else gets the file
    and the exception type, so an unexpected one can still be traced."""
    if isinstance(problem, (ImageReadError, LabelFileError)):
        return str(problem)
    if isinstance(problem, OSError):
        text = f"{image_path}: {problem.strerror or problem}"
    else:
        text = f"{image_path}: {type(problem).__name__}: {problem}"
    return " ".join(text.split())


def suggestions_for(prediction: Prediction, predictor: Predictor, options: PredictOptions, record: dict) -> list[dict]:
    # Each shape carries the part of the run record that says where it came from.
    provenance = {key: record[key] for key in ("model", "model_sha256", "threshold")}
    return [suggestion_shape(suggestion.region, suggestion.label, provenance, suggestion.kind_probability)
            for suggestion in prediction.suggestions(options.suggestions, predictor.model.info.labels[0])]


def heat_map_png(score_map: np.ndarray) -> np.ndarray:
    """BGR heat map of a normalised map; the threshold (``NORMALISED_THRESHOLD``) sits mid-scale."""
    scaled = (np.clip(score_map, 0.0, 1.0) * 255).astype(np.uint8)
    return cv2.applyColorMap(scaled, cv2.COLORMAP_JET)


# The overlay is clear below this score and as opaque as OVERLAY_OPACITY from
# the threshold up, so the normal surface stays readable under it.
OVERLAY_CLEAR_BELOW = 0.25
OVERLAY_OPACITY = 0.6
COLOUR_BAR_WIDTH = 18


def heat_map_overlay(image: np.ndarray, score_map: np.ndarray, with_colour_bar: bool = True) -> np.ndarray:
    """BGR picture a person can read: the map over the photo (both the same size), with a colour bar
    saying what the colours mean."""
    photo = cv2.cvtColor(image, cv2.COLOR_RGB2BGR).astype(np.float32)
    alpha = np.clip((score_map - OVERLAY_CLEAR_BELOW) / (NORMALISED_THRESHOLD - OVERLAY_CLEAR_BELOW), 0.0, 1.0)[..., None]
    blended = photo * (1 - OVERLAY_OPACITY * alpha) + heat_map_png(score_map).astype(np.float32) * OVERLAY_OPACITY * alpha
    if not with_colour_bar:
        return blended.astype(np.uint8)
    return np.hstack([blended.astype(np.uint8), colour_bar(image.shape[0])])


def colour_bar(height: int) -> np.ndarray:
    """A vertical scale from 0 (bottom) to 1 (top), with the model's threshold marked."""
    height = max(height, 64)
    levels = np.linspace(1.0, 0.0, height, dtype=np.float32)[:, None].repeat(COLOUR_BAR_WIDTH, axis=1)
    bar = heat_map_png(levels)
    label = np.full((height, 44, 3), 255, np.uint8)
    for value, text in ((1.0, "1.0"), (NORMALISED_THRESHOLD, f"{NORMALISED_THRESHOLD:.1f} thr"), (0.0, "0.0")):
        y = int(round((1.0 - value) * (height - 1)))
        cv2.line(bar, (0, y), (COLOUR_BAR_WIDTH - 1, y), (255, 255, 255) if value == NORMALISED_THRESHOLD else (0, 0, 0), 1)
        cv2.putText(label, text, (2, min(max(y + 4, 10), height - 2)), cv2.FONT_HERSHEY_PLAIN, 0.7, (0, 0, 0), 1,
                    cv2.LINE_AA)
    return np.hstack([bar, label])[: max(height, 1)]


def write_results(image_path: Path, image: ReducedImage, prediction: Prediction, predictor: Predictor,
                  options: PredictOptions, record: dict) -> int:
    """The label file, in the photo's pixels; the map picture at the size the image was decoded at."""
    suggestions = suggestions_for(prediction, predictor, options, record)
    label_path = label_path_for(image_path, options.out_dir)
    height, width = image.shape
    written = update_label_file(label_path, image_path, height, width, suggestions,
                                run_record={**record, IMAGE_SCORE_KEY: round(prediction.image_score, 4)})
    if options.maps_dir is not None:
        picture = heat_map_png(prediction.score_map) if options.bare_maps else \
            heat_map_overlay(image.pixels, prediction.score_map)
        ok, encoded = cv2.imencode(".png", picture)
        if ok:
            write_atomically(options.maps_dir / f"{image_path.stem}_anomaly.png", encoded.tobytes())
    return len(written[RECORD_KEY][SUGGESTED_KEY])


def predict_paths(
    images: list[Path],
    model_path: os.PathLike | str | None,
    options: PredictOptions,
    device: str = DEFAULT_DEVICE,
    progress: Callable[[int, int, Path], None] | None = None,
    cancelled: Callable[[], bool] | None = None,
    predictor: Predictor | None = None,
    show_progress_bar: bool = False,
) -> Summary:
    """Suggest defects on ``images`` and write their label files: plan what each image needs, then
    decode, infer and write in overlapping stages (see the module docstring)."""
    started = time.perf_counter()
    options.check()
    if predictor is None:
        assert model_path is not None, "predict_paths needs a model path or a predictor"
        predictor = Predictor(model_path, device=device)
    record = run_record(predictor, options)
    plan = plan_run(images, options, record)
    summary = Summary(images=len(images), skipped=plan.skipped, reviewed=plan.reviewed, device=predictor.device)
    prepare_label_folders(plan.todo, options.out_dir)
    # The bar closes last, also on Ctrl-C, so nothing is drawn after a final message.
    with Tally(summary, progress, show_progress_bar) as tally:
        for image_path, problem in plan.clashes:
            tally.count(image_path, problem)
        summary.cancelled = run_stages(plan.todo, predictor, options, record, tally, cancelled)
    summary.seconds = time.perf_counter() - started
    return summary


# -- planning ---------------------------------------------------------------------------


@dataclass
class Plan:
    """What a run does with each image it was given."""

    todo: list[Path] = field(default_factory=list)
    clashes: list[tuple[Path, LabelFileError]] = field(default_factory=list)  # left out: another image's label file
    skipped: int = 0  # done already
    reviewed: int = 0  # left alone: a person marked them reviewed


def plan_run(images: list[Path], options: PredictOptions, record: dict) -> Plan:
    plan = Plan()
    writers_of: dict[str, Path] = {}
    for image_path in map(Path, images):
        label_path = label_path_for(image_path, options.out_dir)
        # Two images of this run with one label file (a.png and a.jpg, or
        # d1/a.png and d2/a.png with --out) would mix their suggestions in it.
        key = os.path.normcase(os.path.abspath(label_path))
        first = writers_of.setdefault(key, image_path)
        if first is not image_path:
            plan.clashes.append((image_path, LabelFileError(
                label_path, f"also the label file of {first}; {image_path} is left out (give it its own --out folder)")))
            continue
        status = label_status(label_path, record, image_path)
        if status == "reviewed" and not options.include_reviewed:
            plan.reviewed += 1
        elif status == "done" and options.skip_done:
            plan.skipped += 1
        else:
            plan.todo.append(image_path)
    return plan


def prepare_label_folders(todo: list[Path], out_dir: Path | None) -> None:
    """Best effort: a folder that cannot be made or tidied fails later, per image, when its label file is written."""
    if out_dir is not None:
        with contextlib.suppress(OSError):
            out_dir.mkdir(parents=True, exist_ok=True)
    for folder in {label_path_for(image_path, out_dir).parent for image_path in todo}:
        # A run killed mid-write left a hidden temporary; this run rewrites that file, so tidy up.
        with contextlib.suppress(LabelFileError, OSError):
            remove_stale_temporaries(folder)


class Tally:
    """Counts each image's outcome into the summary and reports progress: to ``progress`` and,
    when asked, on a terminal bar, which closes with the tally."""

    def __init__(self, summary: Summary, progress: Callable[[int, int, Path], None] | None, show_progress_bar: bool):
        self.summary = summary
        self.progress = progress
        self.done = summary.skipped + summary.reviewed
        self.bar = None
        if show_progress_bar:
            from tqdm import tqdm

            self.bar = tqdm(total=summary.images, initial=self.done, unit="image", desc="predict", dynamic_ncols=True)

    def __enter__(self) -> Tally:
        return self

    def __exit__(self, *exception: object) -> None:
        if self.bar is not None:
            self.bar.close()

    def count(self, image_path: Path, outcome: Future | Exception) -> None:
        """One image finished: its written label file (a future of its suggestion count) or its problem."""
        summary = self.summary
        try:
            if isinstance(outcome, Exception):
                raise outcome
            found = outcome.result()
            summary.predicted += 1
            summary.suggestions += found
            summary.images_with_defects += found > 0
        except Exception as problem:  # noqa: BLE001 - one image never ends the batch
            summary.failures.append((str(image_path), one_line_failure(image_path, problem)))
        self.done += 1
        if self.bar is not None:
            self.bar.update(1)
        if self.progress is not None:
            self.progress(self.done, summary.images, image_path)


# -- the stages: decode, infer, write ---------------------------------------------------


def run_stages(todo: list[Path], predictor: Predictor, options: PredictOptions, record: dict, tally: Tally,
               cancelled: Callable[[], bool] | None) -> bool:
    """Decode, infer and write the images of ``todo``, each stage on its own threads; True when
    ``cancelled`` stopped it (the label files already written stay)."""
    stopped = False
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="decode") as decoder, \
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="write") as writer:
        # A large photo is decoded at a fraction of its size: enough for the model and the outlines.
        architecture = predictor.model.info.architecture
        decoding = DecodeAhead(decoder, todo, working_size(architecture.input_size),
                               largest_reduction(architecture.scale), options.batch_size)
        writing = WriteBehind(writer, predictor, options, record)
        while decoding:
            if cancelled is not None and cancelled():
                stopped = True
                break
            batch = decoding.next_batch(tally)
            if not batch:
                continue
            try:
                predictions = infer(predictor, batch)
            except Exception as problem:  # noqa: BLE001 - e.g. out of memory on one large image
                for image_path, _ in batch:
                    tally.count(image_path, problem)
                continue
            writing.submit(batch, predictions)
            writing.collect(tally)
        decoding.cancel()
        writing.collect(tally, wait=True)
    return stopped


class DecodeAhead:
    """The decode stage: images decoded on a thread pool, a batch and ``DECODE_AHEAD`` more ahead of inference."""

    def __init__(self, pool: ThreadPoolExecutor, paths: list[Path], size: int, most: int, batch_size: int):
        self.pool, self.size, self.most, self.batch_size = pool, size, most, batch_size
        self.queue = iter(paths)
        self.decoding: deque[tuple[Path, Future[ReducedImage]]] = deque()
        self.top_up()

    def __bool__(self) -> bool:
        return bool(self.decoding)

    def top_up(self) -> None:
        while len(self.decoding) < DECODE_AHEAD + self.batch_size:
            next_path = next(self.queue, None)
            if next_path is None:
                return
            self.decoding.append((next_path, self.pool.submit(read_image_reduced, next_path, self.size, self.most)))

    def next_batch(self, tally: Tally) -> list[tuple[Path, ReducedImage]]:
        """Up to a batch of decoded images; those that fail to decode are counted as failed instead."""
        batch: list[tuple[Path, ReducedImage]] = []
        while self.decoding and len(batch) < self.batch_size:
            image_path, future = self.decoding.popleft()
            try:
                batch.append((image_path, future.result()))
            except Exception as problem:  # noqa: BLE001 - any decode failure is reported per file
                tally.count(image_path, problem if isinstance(problem, (ImageReadError, OSError))
                            else ImageReadError(image_path, str(problem)))
        self.top_up()
        return batch

    def cancel(self) -> None:
        for _, future in self.decoding:
            future.cancel()


def infer(predictor: Predictor, batch: list[tuple[Path, ReducedImage]]) -> list[Prediction]:
    """The inference stage: one forward pass for the batch; each map in its photo's full-resolution pixels."""
    predictions = predictor.predict_batch([image.pixels for _, image in batch], [image.shape for _, image in batch])
    return [prediction.for_photo(image.shape) for (_, image), prediction in zip(batch, predictions)]


class WriteBehind:
    """The write stage: polygons, label files and map pictures on their own thread, so inference
    never waits on the disk."""

    def __init__(self, pool: ThreadPoolExecutor, predictor: Predictor, options: PredictOptions, record: dict):
        self.pool, self.predictor, self.options, self.record = pool, predictor, options, record
        self.pending: deque[tuple[Path, Future[int]]] = deque()

    def submit(self, batch: list[tuple[Path, ReducedImage]], predictions: list[Prediction]) -> None:
        for (image_path, image), prediction in zip(batch, predictions):
            self.pending.append((image_path, self.pool.submit(write_results, image_path, image, prediction,
                                                              self.predictor, self.options, self.record)))

    def collect(self, tally: Tally, wait: bool = False) -> None:
        """Count the writes that are done, in order (all of them, waiting, with ``wait``)."""
        while self.pending and (wait or self.pending[0][1].done()):
            tally.count(*self.pending.popleft())

"""LabelMe 6 label files carrying our suggestions beside people's shapes.

Why one module of this size: it is the label-file format, the one place
that decides what of a file is ours and what is a person's (marks, merge,
remembered decisions, atomic writes, the folder lock); split, those rules
could drift apart.

A suggestion is an ordinary LabelMe polygon with two marks:

- ``flags["dsarad_pending"] = True``: shows as a tickable box in LabelMe's
  label dialog; unticking it there accepts the suggestion.
- an extra shape key ``"dsarad"``: ``{"state", "score_max", "score_mean",
  "model", "model_sha256", "threshold", "fingerprint"}``, the fingerprint
  being a short hash of what a person can edit as we wrote it: label, points,
  and also description, group_id and shape_type, so that a note typed into a
  suggestion is never thrown away.

A shape is our unreviewed suggestion only while all three hold: the record
says ``pending``, the flag is ticked, and the shape still matches the
fingerprint. Anything else (no record, accepted, moved, relabelled, noted,
flag unticked) belongs to a person, and merging never changes or drops it.

**Decisions stick.** LabelMe deletes a rejected shape without a trace, so
the file's top-level ``dsarad`` record remembers: ``suggested`` lists what
the last run wrote (fingerprint, outline, score, threshold, model), and
``rejected`` what people deleted of it, kept through every later run. A
new suggestion mostly inside a shape a person drew or accepted, or inside a
rejected one, is not added; a rejected one may come back only at a lower
threshold than the one it was rejected at (the person asked for more), and
its description then says so, which also keeps its fingerprint apart from the
rejection's. A suggestion is never both pending and rejected: where a file
says both (an undone rejection, in files of older versions), the pending
shape wins, as it is what the person last saw.

Both marks survive LabelMe's own open and save (labelme 6.3.1):
``_label_file.py`` ``_load_shape_json_obj`` puts unknown shape keys in
``other_data``, ``app.py`` ``_shapes_from_dicts`` keeps them and the file's
flags on the ``Shape`` (``Shape.copy`` is a deep copy, so undo keeps them
too), and ``app.py`` ``_shape_to_dict`` writes ``other_data`` back first;
unknown top-level keys travel the same way. LabelMe does rewrite
``version``, ``imageHeight``/``imageWidth`` and re-encodes masks. Editing a
shape's label in LabelMe's dialog rebuilds its flags from the ``label_flags``
setting (``label_dialog.py`` ``_on_text_changed``), which drops our flag: the
shape then counts as reviewed, the safe direction.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.metadata
import json
import math
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path, PureWindowsPath
from typing import TYPE_CHECKING, Any

from .atomic_write import TEMPORARY_NAME, write_atomically
from .errors import FileProblem
from .polygons import is_covered

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]  # checked for None before use
    import msvcrt

if TYPE_CHECKING:
    from .polygons import Region

PENDING_FLAG = "dsarad_pending"
# The image-level LabelMe flag that marks an image as reviewed by a person.
REVIEWED_FLAG = "ok"
RECORD_KEY = "dsarad"
SUGGESTED_KEY = "suggested"  # in the top-level record: what the last run wrote
REJECTED_KEY = "rejected"  # in the top-level record: what people deleted, remembered for good
STATES = ("pending", "accepted")
PROVENANCE_KEYS = ("model", "model_sha256", "threshold")

# Shared by every writer in a folder; a separate file because the JSON itself
# is replaced on every write, so a lock on it would not outlive the write.
LOCK_FILE_NAME = ".dsarad.lock"

_FINGERPRINT_DECIMALS = 3
_POINT_DECIMALS = 2

try:
    # The value labelme.__version__ holds, without importing LabelMe (Qt).
    LABELME_VERSION = importlib.metadata.version("labelme")
except importlib.metadata.PackageNotFoundError:
    LABELME_VERSION = "6.3.1"


class LabelFileError(FileProblem):
    """A label file we cannot use."""


# -- reading -----------------------------------------------------------------


def label_path_for(image_path: str | os.PathLike, out_dir: str | os.PathLike | None = None) -> Path:
    """Where LabelMe keeps an image's label file: the image's name with ``.json``, beside the image
    or in ``out_dir`` (LabelMe's ``--output`` folder, ``dsarad predict --out``)."""
    image = Path(image_path)
    return (Path(out_dir) if out_dir is not None else image.parent) / f"{image.stem}.json"


def is_reviewed(data: dict) -> bool:
    """Whether a person marked the image reviewed: the image flag ``REVIEWED_FLAG`` ticked."""
    flags = data.get("flags")
    return isinstance(flags, dict) and flags.get(REVIEWED_FLAG) is True


def load_label_file(path: str | os.PathLike) -> dict:
    """The file's JSON object, every field as stored, after checking the
    structure merging relies on: an object whose ``shapes`` is a list of
    objects, each with a string ``label`` and ``points`` as [x, y] numbers."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise LabelFileError(path, f"cannot read ({exc.strerror or exc})") from exc
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise LabelFileError(path, "not UTF-8 text") from exc
    except json.JSONDecodeError as exc:
        raise LabelFileError(path, f"invalid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from exc
    problem = _structure_problem(data)
    if problem:
        raise LabelFileError(path, problem)
    return data


def _structure_problem(data: Any) -> str | None:
    if not isinstance(data, dict):
        return f"expected a JSON object at the top level, found {_json_type(data)}"
    if "shapes" not in data:
        return "missing key 'shapes'"
    if not isinstance(data["shapes"], list):
        return f"'shapes' must be a list, found {_json_type(data['shapes'])}"
    for index, shape in enumerate(data["shapes"]):
        where = f"shapes[{index}]"
        if not isinstance(shape, dict):
            return f"{where} must be an object, found {_json_type(shape)}"
        for key in ("label", "points"):
            if key not in shape:
                return f"{where} is missing key '{key}'"
        if not isinstance(shape["label"], str):
            return f"{where}: 'label' must be a string, found {_json_type(shape['label'])}"
        if not _is_point_list(shape["points"]):
            return f"{where}: 'points' must be a list of [x, y] number pairs"
    return None


def _is_point_list(points: Any) -> bool:
    return isinstance(points, list) and all(
        isinstance(point, list) and len(point) == 2 and all(_is_number(v) for v in point) for point in points
    )


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _json_type(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number" if _is_number(value) else type(value).__name__)


# -- our suggestions -----------------------------------------------------------


def shape_fingerprint(shape: dict) -> str:
    """Short hash of the parts of a shape a person can edit.

    Points are rounded so that LabelMe's rewrite of the same coordinates as
    floats (1 -> 1.0) keeps the hash; a missing description counts as "", as
    LabelMe loads it.
    """
    canonical = json.dumps(
        [
            shape["label"],
            [[_rounded(x), _rounded(y)] for x, y in shape["points"]],
            shape.get("description") or "",
            shape.get("group_id"),
            shape.get("shape_type"),
        ],
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


def _rounded(value: float) -> float:
    return round(float(value), _FINGERPRINT_DECIMALS) + 0.0  # + 0.0 turns -0.0 into 0.0


def suggestion_shape(region: Region, label: str, provenance: dict, kind_probability: float | None = None) -> dict:
    """A LabelMe 6 polygon shape for ``region``, marked as our pending suggestion.

    ``provenance`` holds the model's ``model`` (name), ``model_sha256`` and the
    ``threshold`` used. ``label`` is a defect kind when the model named one,
    with its ``kind_probability``.
    """
    missing = [key for key in PROVENANCE_KEYS if key not in provenance]
    if missing:
        raise ValueError(f"provenance is missing {', '.join(missing)}")
    # Key order as LabelMe writes shapes, our record last.
    shape: dict[str, Any] = {
        "label": label,
        "points": [[round(float(x), _POINT_DECIMALS), round(float(y), _POINT_DECIMALS)] for x, y in region.points],
        "group_id": None,
        "description": f"dsarad {region.score_max:.2f}",
        "shape_type": "polygon",
        "flags": {PENDING_FLAG: True},
        "mask": None,
    }
    shape[RECORD_KEY] = {
        "state": "pending",
        "score_max": round(float(region.score_max), 4),
        "score_mean": round(float(region.score_mean), 4),
        "model": provenance["model"],
        "model_sha256": provenance["model_sha256"],
        "threshold": float(provenance["threshold"]),
        "fingerprint": shape_fingerprint(shape),
    }
    if kind_probability is not None:
        shape[RECORD_KEY]["kind_probability"] = round(float(kind_probability), 4)
    return shape


def is_pending_suggestion(shape: Any) -> bool:
    """Whether ``shape`` is our suggestion, still untouched by any person."""
    if not isinstance(shape, dict):
        return False
    record, flags = shape.get(RECORD_KEY), shape.get("flags")
    if not isinstance(record, dict) or record.get("state") != "pending":
        return False
    if not isinstance(flags, dict) or flags.get(PENDING_FLAG) is not True:
        return False
    try:
        return record.get("fingerprint") == shape_fingerprint(shape)
    except (KeyError, TypeError, ValueError):
        return False


def set_state(shape: dict, state: str) -> None:
    """Mark our suggestion ``accepted`` (flag off) or ``pending`` again, in place.

    Marking pending re-takes the fingerprint from the shape as it is now,
    which hands it back to the next merge to replace.
    """
    if state not in STATES:
        raise ValueError(f"state must be one of {STATES}, got {state!r}")
    record = shape.get(RECORD_KEY)
    if not isinstance(record, dict):
        raise ValueError(f"not a dsarad suggestion: the shape has no {RECORD_KEY!r} record")
    if not isinstance(shape.get("flags"), dict):
        shape["flags"] = {}
    record["state"] = state
    shape["flags"][PENDING_FLAG] = state == "pending"
    if state == "pending":
        record["fingerprint"] = shape_fingerprint(shape)


# -- merging and writing -------------------------------------------------------


def merge_suggestions(
    existing: dict | None,
    suggestions: list[dict],
    image_path: str,
    image_height: int,
    image_width: int,
    run_record: dict | None = None,
) -> dict:
    """New file content: ``existing`` with its pending suggestions replaced.

    People's shapes stay exactly as they are, in their order; the new
    suggestions follow them, except any identical (same fingerprint) to a
    shape already kept, such as an unchanged accepted earlier suggestion,
    any mostly inside a shape a person drew or accepted, and any mostly
    inside a rejected suggestion (``remembered_rejections``) at a threshold
    no lower than it was rejected at. With ``run_record``, the top-level
    record becomes it, plus what was suggested and every rejection so far.
    A new file (``existing`` None) gets LabelMe's layout, ``image_path`` as
    its ``imagePath`` (relative to the JSON's folder) and no embedded image.
    ``existing`` is what ``load_label_file`` returned; it is not modified.
    Raises ValueError if it describes another image (name or size).
    """
    data: dict[str, Any]
    if existing is None:
        data = {
            "version": LABELME_VERSION,
            "flags": {},
            "shapes": [],
            "imagePath": image_path,
            "imageData": None,
            "imageHeight": image_height,
            "imageWidth": image_width,
        }
    else:
        data = copy.deepcopy(existing)
        _check_same_image(data, image_path, image_height, image_width)
        # Only fill gaps: everything present stays as it was.
        for key, value in [("version", LABELME_VERSION), ("flags", {}), ("imagePath", image_path), ("imageData", None)]:
            data.setdefault(key, value)
        for key, size in [("imageHeight", image_height), ("imageWidth", image_width)]:
            if data.get(key) is None:
                data[key] = size
    rejections = remembered_rejections(data)
    kept = [shape for shape in data["shapes"] if not is_pending_suggestion(shape)]
    present = {_fingerprint_or_none(shape) for shape in kept}
    added = [copy.deepcopy(shape) for shape in new_suggestions(suggestions, kept, rejections)
             if _fingerprint_or_none(shape) not in present]
    data["shapes"] = kept + added
    if run_record is not None:
        data[RECORD_KEY] = {**copy.deepcopy(run_record), REJECTED_KEY: rejections,
                            SUGGESTED_KEY: [suggestion_memory(shape) for shape in added if is_pending_suggestion(shape)]}
    return data


def area_outline(shape: dict) -> list[list[float]]:
    """The outline of the area a shape covers, as a polygon's points; [] for lines and points.

    Rectangles (two corners), circles (centre and a point on the rim) and
    masks (their box) become polygons; a circle a 32-gon.
    """
    kind, points = shape.get("shape_type") or "polygon", shape.get("points") or []
    if kind in ("polygon", "oriented_rectangle") and len(points) >= 3:
        return [list(map(float, point)) for point in points]
    if kind in ("rectangle", "mask") and len(points) == 2:
        (x0, y0), (x1, y1) = points
        return [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]
    if kind == "circle" and len(points) == 2:
        (cx, cy), (ex, ey) = points
        radius = math.hypot(ex - cx, ey - cy)
        return [[cx + radius * math.cos(2 * math.pi * k / 32), cy + radius * math.sin(2 * math.pi * k / 32)]
                for k in range(32)]
    return []


def new_suggestions(suggestions: list[dict], people_shapes: list[dict], rejections: list[dict]) -> list[dict]:
    """The pending suggestions that repeat no decision a person made: none mostly inside one of
    ``people_shapes`` (drawn or accepted) or inside a rejection that holds at its threshold.

    One mostly inside a rejection made at a higher threshold (shown again because the
    person asked for more) comes back as a copy whose description names that threshold.
    """
    people = [outline for outline in map(area_outline, people_shapes) if outline]
    kept = []
    for shape in suggestions:
        if not is_pending_suggestion(shape):
            kept.append(shape)
            continue
        threshold = shape[RECORD_KEY]["threshold"]
        if is_covered(shape["points"], people) or is_covered(shape["points"], rejected_outlines(rejections, threshold)):
            continue
        rejected_above = [entry["threshold"] for entry in rejections
                          if entry["threshold"] > threshold and is_covered(shape["points"], [entry["points"]])]
        kept.append(_noted_as_rejected(shape, min(rejected_above)) if rejected_above else shape)
    return kept


def _noted_as_rejected(shape: dict, threshold: float) -> dict:
    """A copy of a pending suggestion that tells it was rejected at ``threshold``; its new
    fingerprint keeps it apart from the rejection (never both pending and rejected)."""
    noted = copy.deepcopy(shape)
    noted["description"] = f"{noted.get('description') or 'dsarad'}, rejected at {threshold:.2f}"
    noted[RECORD_KEY]["fingerprint"] = shape_fingerprint(noted)
    return noted


def suggestion_memory(shape: dict) -> dict:
    """What a label file remembers of one of our suggestions: where, at what score and threshold, by which model."""
    record = shape[RECORD_KEY]
    return {"fingerprint": record["fingerprint"], "points": shape["points"], "score_max": record["score_max"],
            "threshold": record["threshold"], "model": record["model"], "model_sha256": record["model_sha256"]}


def remember_rejected(record: dict, shapes: Iterable[dict]) -> None:
    """Add our suggestions ``shapes`` to the file's top-level ``record`` as rejected, for good: no
    later run suggests them again at the same place."""
    rejected = [entry for entry in record.get(REJECTED_KEY) or [] if isinstance(entry, dict)]
    known = {entry.get("fingerprint") for entry in rejected}
    for shape in shapes:
        memory = suggestion_memory(shape)
        if memory["fingerprint"] not in known:
            rejected.append(memory)
            known.add(memory["fingerprint"])
    record[REJECTED_KEY] = rejected


def remembered_rejections(data: dict) -> list[dict]:
    """Every suggestion people rejected in this file: those remembered, and those the last run
    wrote that no shape carries any more (deleted in LabelMe since)."""
    run = data.get(RECORD_KEY)
    if not isinstance(run, dict):
        return []
    pending = pending_fingerprints(data)  # brought back by an undo: pending, not rejected
    remembered = [entry for entry in run.get(REJECTED_KEY) or [] if _is_memory(entry)
                  and entry["fingerprint"] not in pending]
    carried = {shape[RECORD_KEY].get("fingerprint") for shape in data.get("shapes", [])
               if isinstance(shape, dict) and isinstance(shape.get(RECORD_KEY), dict)}
    carried |= {_fingerprint_or_none(shape) for shape in data.get("shapes", []) if isinstance(shape, dict)}
    known = {entry["fingerprint"] for entry in remembered}
    for entry in run.get(SUGGESTED_KEY) or []:
        if _is_memory(entry) and entry["fingerprint"] not in carried and entry["fingerprint"] not in known:
            remembered.append(entry)
            known.add(entry["fingerprint"])
    return remembered


def pending_fingerprints(data: dict) -> set[str]:
    """The fingerprints of the pending suggestions among a label file's shapes."""
    return {shape[RECORD_KEY]["fingerprint"] for shape in data.get("shapes") or [] if is_pending_suggestion(shape)}


def without_contradictions(data: dict) -> dict:
    """``data`` with no rejection of a suggestion that is pending in it (the pending shape wins:
    a person undid the rejection); a copy where anything is dropped, else ``data`` itself."""
    run = data.get(RECORD_KEY)
    if not isinstance(run, dict) or not isinstance(run.get(REJECTED_KEY), list):
        return data
    pending = pending_fingerprints(data)
    rejected = [entry for entry in run[REJECTED_KEY] if not (isinstance(entry, dict) and entry.get("fingerprint") in pending)]
    if len(rejected) == len(run[REJECTED_KEY]):
        return data
    return {**data, RECORD_KEY: {**run, REJECTED_KEY: rejected}}


def rejected_outlines(rejections: list[dict], threshold: float) -> list[list]:
    """The outlines of rejected suggestions that still hold at ``threshold``: those rejected at it or below."""
    return [entry["points"] for entry in rejections if threshold >= entry["threshold"]]


def _is_memory(entry: Any) -> bool:
    """A remembered suggestion (older files list bare fingerprints, which say nothing of where)."""
    return (isinstance(entry, dict) and isinstance(entry.get("fingerprint"), str)
            and _is_point_list(entry.get("points")) and _is_number(entry.get("threshold")))


def _fingerprint_or_none(shape: dict) -> str | None:
    try:
        return shape_fingerprint(shape)
    except (KeyError, TypeError, ValueError):
        return None


def _check_same_image(data: dict, image_path: str, image_height: int, image_width: int) -> None:
    stored_path = data.get("imagePath")
    if isinstance(stored_path, str) and stored_path:
        # PureWindowsPath splits on both separators; names compare without
        # case, so a Windows-written file still matches its image.
        stored_name, image_name = PureWindowsPath(stored_path).name, PureWindowsPath(image_path).name
        if stored_name.casefold() != image_name.casefold():
            raise ValueError(f"labels belong to image {stored_name!r}, not {image_name!r}")
    stored_size = (data.get("imageWidth"), data.get("imageHeight"))
    if None not in stored_size and stored_size != (image_width, image_height):
        raise ValueError(
            f"labels are for a {stored_size[0]} x {stored_size[1]} image, "
            f"but the image is {image_width} x {image_height}"
        )


def write_label_file(path: str | os.PathLike, data: dict) -> None:
    """Write ``data`` as LabelMe does (UTF-8, indent 2), atomically: a reader
    sees the old file or the new one, never a mix, even after a crash. A
    rejection of a suggestion that ``data`` holds as pending is left out
    (``without_contradictions``)."""
    data = without_contradictions(data)
    try:
        payload = json.dumps(data, ensure_ascii=False, indent=2).encode("utf-8")
    except UnicodeEncodeError:
        # A lone surrogate: a file name that is not UTF-8 (Linux hands those
        # over as surrogate escapes) or a "\udXXX" escape in a file we read.
        # As \u escapes it is valid UTF-8 JSON, and reads back to the same string.
        payload = json.dumps(data, ensure_ascii=True, indent=2).encode("ascii")
    # Through a symlink, replace the file it points to, as LabelMe's open(..., "w") does.
    try:
        write_atomically(path, payload, follow_symlinks=True)
    except OSError as exc:
        raise LabelFileError(path, f"cannot write ({exc.strerror or exc})") from exc


def update_label_file(
    json_path: str | os.PathLike,
    image_path: str | os.PathLike,
    image_height: int,
    image_width: int,
    suggestions: list[dict],
    *,
    run_record: dict | None = None,
) -> dict:
    """Merge ``suggestions`` into the label file at ``json_path`` and write it.

    The read-merge-write runs under an exclusive lock on the folder's
    ``.dsarad.lock``, so concurrent runs on one folder never lose each other's
    shapes. A file that exists but cannot be parsed, or that describes another
    image, raises LabelFileError and is left untouched. ``run_record``, if
    given, replaces the file's top-level ``"dsarad"`` entry (what the run
    that wrote these suggestions used; LabelMe keeps unknown top-level keys).
    Returns what was written.
    """
    json_path = Path(json_path)
    image_reference = _relative_image_path(image_path, json_path.parent)
    with _exclusive_lock(json_path):
        existing = load_label_file(json_path) if os.path.lexists(json_path) else None
        try:
            data = merge_suggestions(existing, suggestions, image_reference, image_height, image_width, run_record)
        except ValueError as exc:
            raise LabelFileError(json_path, str(exc)) from exc
        write_label_file(json_path, data)
    return data


def confirm_defect_free(json_path: str | os.PathLike) -> int | None:
    """Mark an image reviewed with no defect: its pending suggestions are rejected (deleted and
    remembered, as a person's rejection is) and the image flag ``REVIEWED_FLAG`` is ticked. An image
    with a shape a person made (drawn, accepted or edited) is left as it is: None. Returns the
    number of suggestions rejected. Under the folder lock, written atomically."""
    json_path = Path(json_path)
    with _exclusive_lock(json_path):
        data = load_label_file(json_path)
        shapes = data.get("shapes") or []
        pending = [shape for shape in shapes if is_pending_suggestion(shape)]
        if len(pending) != len(shapes):
            return None
        recorded, ticked = data.get(RECORD_KEY), data.get("flags")
        run: dict = dict(recorded) if isinstance(recorded, dict) else {}
        flags: dict = ticked if isinstance(ticked, dict) else {}
        remember_rejected(run, pending)
        write_label_file(json_path, {**data, "shapes": [], "flags": {**flags, REVIEWED_FLAG: True}, RECORD_KEY: run})
    return len(pending)


def remove_stale_temporaries(folder: str | os.PathLike[str]) -> int:
    """Delete the temporaries that label-file writers killed mid-write
    (kill -9, power loss) left in ``folder``; return how many.

    Takes the folder lock, and every temporary is made and renamed under it
    (``update_label_file``), so none of these belongs to a live writer.
    Raises LabelFileError if the lock cannot be taken.
    """
    removed = 0
    with _exclusive_lock(Path(folder) / LOCK_FILE_NAME):
        try:
            entries = list(os.scandir(folder))
        except OSError:
            return 0
        for entry in entries:
            if TEMPORARY_NAME.fullmatch(entry.name) and entry.is_file(follow_symlinks=False):
                try:
                    os.unlink(entry.path)
                except OSError:
                    continue
                removed += 1
    return removed


def _relative_image_path(image_path: str | os.PathLike, label_folder: Path) -> str:
    """``imagePath`` as LabelMe's save_labels writes it: os.path.relpath."""
    try:
        return os.path.relpath(os.path.abspath(image_path), os.path.abspath(label_folder))
    except ValueError:  # another drive on Windows
        return os.path.abspath(image_path)


@contextmanager
def _exclusive_lock(json_path: Path) -> Iterator[None]:
    lock_path = Path(os.path.realpath(json_path)).parent / LOCK_FILE_NAME
    try:
        descriptor = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as exc:
        raise LabelFileError(json_path, f"cannot create lock file {lock_path.name} ({exc.strerror or exc})") from exc
    try:
        if fcntl is not None:
            fcntl.flock(descriptor, fcntl.LOCK_EX)
        else:
            _lock_windows(descriptor)
        yield
    finally:
        os.close(descriptor)  # closing releases the lock


def _lock_windows(descriptor: int) -> None:
    while True:
        try:
            msvcrt.locking(descriptor, msvcrt.LK_LOCK, 1)  # type: ignore[attr-defined]  # Windows-only stubs; gives up after ~10 s
            return
        except OSError:
            continue

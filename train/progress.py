"""Progress events of training and retraining, for a terminal or for the plugin.

Events are dicts: ``{"event": "stage", "stage", "message"}``, ``{"event":
"progress", "phase", "step", "steps", "fraction", "seconds", "losses"}`` (from
``engine.run_steps``), ``{"event": "problem", "message"}`` and, at the end of
a retrain, ``{"event": "done", ...}``.
"""

from __future__ import annotations

import json
import math
import sys
from typing import IO, TYPE_CHECKING

from tqdm import tqdm

from labelme_dsarad.model.polygons import DEFAULT_EXTEND_TO, DEFAULT_MIN_PEAK, SuggestionSettings

from .metric_names import REPORTED_METRICS
from .retrain_checks import unmeasured

if TYPE_CHECKING:
    from .retrain import RetrainResult

BAR_STEPS = 1000  # the bar counts thousandths of a phase, whether it is budgeted in steps or minutes


def json_progress(event: dict, stream: IO[str] | None = None) -> None:
    """One JSON object per line, flushed at once: what the plugin's retrain dialog reads."""
    stream = stream or sys.stdout
    stream.write(json.dumps(event, allow_nan=False, default=str) + "\n")
    stream.flush()


class TerminalProgress:
    """A progress bar per phase on stderr; stage messages and problems as lines above it."""

    def __init__(self, stream: IO[str] | None = None, enabled: bool = True):
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.bar: tqdm | None = None
        self.phase: str | None = None

    def __call__(self, event: dict) -> None:
        if not self.enabled:
            return
        kind = event["event"]
        if kind == "progress":
            self._show(event)
        elif kind == "stage":
            self._write(event["message"])
        elif kind == "problem":
            message = event["message"]
            self._write(message if message.startswith("warning:") else f"skipped: {message}")

    def _show(self, event: dict) -> None:
        if self.bar is None or event["phase"] != self.phase:
            self.close()
            self.phase = event["phase"]
            self.bar = tqdm(total=BAR_STEPS, desc=self.phase, file=self.stream, dynamic_ncols=True,
                            bar_format="{desc}: {percentage:3.0f}%|{bar}| {postfix}")
        self.bar.n = int(round(event["fraction"] * BAR_STEPS))
        losses = " ".join(f"{key} {value:.4f}" for key, value in event["losses"].items())
        self.bar.set_postfix_str(f"step {event['step']}, {event['seconds']:.0f} s, {losses}", refresh=True)
        if event["fraction"] >= 1.0:
            self.close()

    def _write(self, line: str) -> None:
        if self.bar is not None:
            self.bar.write(line, file=self.stream)
        else:
            self.stream.write(line + "\n")
            self.stream.flush()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def format_retrain_result(result: RetrainResult) -> str:
    """What ``dsarad retrain`` prints at the end: where the version went, the holdout before and
    after, and the command that switches to it."""
    lines = [f"{result.product} v{result.version} stored in {result.path} ({result.seconds / 60:.1f} min); "
             f"still using {result.in_use}"]
    holdout = result.counts["holdout"]
    note = unmeasured(holdout)
    if note:
        lines.append(f"before and after: {note}")
    else:
        lines.append(f"on held-out reviewed images ({holdout['defect']} with defects, {holdout['normal']} normal), "
                     f"never trained on: {result.previous['name']} before, v{result.version} after")
        lines.append(f"{'':<36}{'before':>10}{'after':>10}")
        for key, title in REPORTED_METRICS:
            before, after = result.before.get(key), result.after.get(key)
            if _number(before) != "-" or _number(after) != "-":  # e.g. "Kind right" of a model that names no kinds
                lines.append(f"{title:<36}{_number(before):>10}{_number(after):>10}")
    by_kind = result.thresholds.get("extend_to_by_kind") or {}
    if by_kind:
        # A level above 1 cuts a kind's suggestions back to where that multiple of the threshold is reached.
        lines.append("suggestions reach, by kind: "
                     + ", ".join(f"{kind} {value:.2f}" + (" (cut back)" if value > 1.0 else "")
                                 for kind, value in by_kind.items())
                     + f" ({DEFAULT_EXTEND_TO:.2f} for the rest)")
    min_peak = result.thresholds.get("min_peak", DEFAULT_MIN_PEAK)
    if min_peak != DEFAULT_MIN_PEAK:
        lines.append(f"suggestions peak at {min_peak:.2f} times the threshold or higher "
                     f"(a normalised score of {min_peak * SuggestionSettings.threshold:.2f})")
    lines.append(f"use it with: dsarad use {result.product} v{result.version}")
    return "\n".join(lines)


def _number(value: float | None) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"

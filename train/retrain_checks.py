"""What a retrain needs from the reviewed labels, and when its before/after numbers can be measured.

Checked before any training starts, by ``dsarad retrain`` (``retrain.retrain``)
and by the plugin's retrain dialog, which imports this without loading torch.
"""

from __future__ import annotations

# Fewer reviewed defect images than this: the dialog holds Start back, the command line warns.
# README, "Corrected images against quality": on Magnetic Tile a retrain from 10 corrected images
# outlined defects worse than the model it started from, one from 25 better.
MIN_REVIEWED_DEFECTS = 25


def missing_images(labels_dir: object, defects: int, normals: int) -> str | None:
    """The one-line refusal of ``dsarad retrain`` when a kind of image is missing (None: both are there).

    A retrain learns the defects from reviewed images with defects, and what is not a defect from
    defect-free ones (reviewed, or given with ``--normals``); without either it cannot start.
    """
    if defects and normals:
        return None
    if not defects and not normals:
        return (f"{labels_dir}: no reviewed images to learn from; outline the defects on images with defects, "
                "tick the image flag 'ok' on each image you reviewed (with defects and without)")
    if not defects:
        return (f"{labels_dir}: no reviewed image with defects; outline the defects (or accept the suggestions) "
                f"on at least {MIN_REVIEWED_DEFECTS} images and tick the image flag 'ok' on them")
    return (f"{labels_dir}: no defect-free image to learn from; tick the image flag 'ok' on reviewed images "
            "without defects, or name defect-free images with --normals (e.g. those the first training used)")


def few_defects_warning(defects: int) -> str | None:
    if defects >= MIN_REVIEWED_DEFECTS:
        return None
    return (f"warning: only {defects} reviewed image{'s' if defects != 1 else ''} with defects; from fewer than "
            f"{MIN_REVIEWED_DEFECTS} a retrain may outline defects worse than the model it starts from")


def unmeasured(holdout: dict) -> str | None:
    """Why a retrain's before/after table stays empty (None: it can be filled).

    ``holdout``: ``{"defect": N, "normal": M}``, the images held out from training. Every measure
    compares defect images with normal ones, so it needs at least one of each.
    """
    defect, normal = int(holdout.get("defect", 0)), int(holdout.get("normal", 0))
    if defect and normal:
        return None
    total = defect + normal
    return (f"{total} held-out image{'s' if total != 1 else ''} ({defect} with defects, {normal} normal): too few "
            "to measure before and after (that needs a held-out image with defects and a normal one); "
            "review more images")

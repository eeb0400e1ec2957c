"""The metrics a person is shown before and after a retrain, with the words they read.

Kept apart from the code that computes them, so the plugin names them without importing it.
"""

REPORTED_METRICS = (
    ("image_auroc", "Image AUROC"),
    ("pixel_auroc", "Pixel AUROC"),
    ("aupro", "AUPRO"),
    ("image_best_f1", "Image best F1"),
    ("image_f1_at_threshold", "Image F1 at threshold"),
    ("defect_best_iou", "Defect IoU (best suggestion)"),
    ("defects_touched", "Defects found"),
    ("false_suggestions_per_normal", "False suggestions per normal image"),
    ("normal_images_with_suggestions", "Normal images with suggestions"),
    ("kind_accuracy", "Kind right"),
)

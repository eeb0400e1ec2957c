"""labelme-dsarad: DSARAD defect pre-annotation for LabelMe."""

__version__ = "0.1.0"

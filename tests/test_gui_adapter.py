"""LabelMe internals the plugin relies on: a missing one fails here, by name."""

from __future__ import annotations

import pytest
from qtpy import QtWidgets

from labelme_dsarad._labelme_adapter import REQUIRED, missing_attributes


@pytest.fixture(scope="module")
def labelme_missing(qapp, tmp_path_factory):
    from labelme_dsarad._labelme_adapter import install_qsettings_sandbox, main_window_class

    install_qsettings_sandbox(tmp_path_factory.mktemp("qsettings"))
    window = main_window_class()(config_file=None, config_overrides={})
    try:
        yield set(missing_attributes(window))
    finally:
        window.close()


@pytest.mark.parametrize("name", REQUIRED)
def test_labelme_still_has(name, labelme_missing):
    assert name not in labelme_missing, f"LabelMe no longer provides {name}; update labelme_dsarad/_labelme_adapter/_required.py"


def test_a_missing_attribute_is_reported_by_name(qapp):
    bare = QtWidgets.QMainWindow()  # a "LabelMe" with none of MainWindow's internals
    missing = missing_attributes(bare)
    assert "MainWindow._load_file" in missing
    assert "Canvas._render_layers" in missing
    assert "ToolsToolBar" in missing
    assert "Shape.other_data" not in missing  # the real Shape class is still checked

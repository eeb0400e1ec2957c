"""The ``labelme-dsarad`` entry point: LabelMe's own main, with the panel attached."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from labelme_dsarad.app import main

from .test_gui_support import write_sample_images


def test_a_missing_model_file_is_one_line_and_exit_2(tmp_path, capsys):
    assert main(["--model", str(tmp_path / "nope.safetensors")]) == 2
    assert capsys.readouterr().err == f"labelme-dsarad: error: {tmp_path / 'nope.safetensors'}: no such model file\n"


def test_the_console_script_opens_labelme_with_the_panel(tmp_path, tiny_model_path):
    write_sample_images(tmp_path / "images", 2)
    # Quit shortly after the window is up; report what the panel saw.
    script = textwrap.dedent(f"""
        import sys
        from qtpy import QtCore, QtWidgets
        import labelme_dsarad.panel as panel_module
        from labelme_dsarad.app import main

        attach = panel_module.attach_panel

        def attach_and_quit(window, models):
            panel = attach(window, models)
            def report():
                print("model:", panel.model.name if panel.model else panel.view.message_label.text())
                print("image:", panel.adapter.image_path())
                buttons = window.findChildren(QtWidgets.QToolButton)
                print("toolbar:", any(button.defaultAction() is panel.view.detect_action for button in buttons))
                QtWidgets.QApplication.instance().quit()
            timer = QtCore.QTimer(window)
            timer.timeout.connect(lambda: report() if panel.model is not None else None)
            timer.start(100)
            QtCore.QTimer.singleShot(60000, report)
            return panel

        panel_module.attach_panel = attach_and_quit
        sys.exit(main([{str(tmp_path / "images")!r}, "--model", {str(tiny_model_path)!r}, "--logger-level", "error"]))
    """)
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path / "config")}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "model: widget v1" in done.stdout
    assert f"image: {tmp_path / 'images' / 'image_00.png'}" in done.stdout
    assert "toolbar: True" in done.stdout

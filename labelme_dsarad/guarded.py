"""Qt slots that never take the window down.

LabelMe installs an excepthook that closes the application on an uncaught
error; a slot of ours that fails shows the error in the panel instead.
"""

from __future__ import annotations

import functools
import traceback
from collections.abc import Callable
from typing import Any


def guarded(method: Callable) -> Callable:
    """Run a slot; an error becomes a message through ``self.show_message`` and a traceback on stderr."""

    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except Exception as error:  # noqa: BLE001 - shown, logged, never fatal
            traceback.print_exc()
            self.show_message(f"{method.__name__.strip('_').replace('_', ' ')} failed: {error}", error=True)
            return None

    return wrapper

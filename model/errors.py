"""The one shape of an expected failure: a file and what is wrong with it."""

from __future__ import annotations

import os


class FileProblem(Exception):
    """A file we cannot use; ``str()`` is one line: file and problem."""

    def __init__(self, path: str | os.PathLike, problem: str) -> None:
        self.path = str(path)
        self.problem = " ".join(str(problem).split())
        super().__init__(f"{self.path}: {self.problem}")

    def __reduce__(self):
        # Rebuild from both parts, so the error survives a trip between processes.
        return (type(self), (self.path, self.problem))

"""Test helper: the files behind a page's download buttons under AppTest.

A download button made with bytes carries the URL of a stored media file; one made with a callable
carries only a ``deferred_file_id`` and no bytes until it is clicked (and that callable is forgotten on
the session's next rerun). ``captured()`` records every file AppTest's media storage receives, so a
test can read back the bytes, file name and MIME type behind each button."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage


@dataclass(frozen=True)
class File:
    data: bytes
    mimetype: str
    filename: str | None


class Captured:
    def __init__(self) -> None:
        self.files: dict[str, File] = {}
        self._lock = threading.Lock()

    def add(self, file_id: str, file: File) -> None:
        with self._lock:
            self.files[file_id] = file

    def of(self, button) -> File:
        """The file behind an AppTest download button; fails for a deferred (callable) one."""
        proto = button.proto
        assert not proto.deferred_file_id, f"{button.label!r} is a deferred download (a callable, no bytes)"
        assert proto.url, f"{button.label!r} has no file"
        file_id = proto.url.rsplit("/", 1)[-1].split(".", 1)[0]
        with self._lock:
            return self.files[file_id]


@contextlib.contextmanager
def captured() -> Iterator[Captured]:
    cap = Captured()
    original = MemoryMediaFileStorage.load_and_get_id

    def spy(self, path_or_data, mimetype, kind, filename=None):
        file_id = original(self, path_or_data, mimetype, kind, filename)
        data = path_or_data if isinstance(path_or_data, bytes) else Path(path_or_data).read_bytes()
        cap.add(file_id, File(data, mimetype, filename))
        return file_id

    MemoryMediaFileStorage.load_and_get_id = spy
    try:
        yield cap
    finally:
        MemoryMediaFileStorage.load_and_get_id = original

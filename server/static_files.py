"""Gradio's "is this file in a static folder?" answered once per file, not at every send.

Gradio asks it for every file of every output it sends, twice per output, and each answer resolves the file's
path and each static folder component by component (an ``lstat`` per component): the page's gallery update
after each image, 48 PNGs served in place from the images folder, spent about 9 ms of the event loop's thread
on it, on a 2-core machine beside the engine (tests/test_static_files.py measures it). The answer is kept per
file, keyed by its path and by the device, inode and modification time of what that path opens now, and by
the static folders: a path that comes to lead to another file (a symlink changed along it, the file
replaced) is asked again, and so is every path once the static folders change.
"""

from __future__ import annotations

import functools
import os

MAX_KEPT = 4096  # answers kept; past this the memory starts again (a gallery page is 48 files)


def install() -> None:
    """Wraps ``gradio.utils.is_static_file`` for this process (Gradio reads it from the module each time)."""
    from gradio import utils
    from gradio.data_classes import FileData, _StaticFiles

    if getattr(utils.is_static_file, "melange_kept", False):
        return
    original = utils.is_static_file
    kept: dict[tuple, bool] = {}

    @functools.wraps(original)
    def is_static_file(file_path) -> bool:
        path = file_path.path if isinstance(file_path, FileData) else file_path
        if not isinstance(path, (str, os.PathLike)):
            return original(file_path)
        try:
            found = os.stat(path)
        except (OSError, ValueError):  # missing (Gradio answers False), or a path no file can have
            return original(file_path)
        key = (os.fspath(path), found.st_dev, found.st_ino, found.st_mtime_ns, tuple(_StaticFiles.all_paths))
        answer = kept.get(key)
        if answer is None:
            answer = original(file_path)
            if len(kept) >= MAX_KEPT:
                kept.clear()
            kept[key] = answer
        return answer

    is_static_file.melange_kept = True
    utils.is_static_file = is_static_file

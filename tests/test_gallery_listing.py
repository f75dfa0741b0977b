"""engines/image/gallery.py's listing: a gallery of thousands of PNGs is read once, not at every Generate, and
what changes behind the app's back (files added, deleted, renamed by hand, another process saving) still shows."""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

from PIL import Image

from engines.base import ImageParams, ImageResult
from engines.image import gallery as gallery_module
from engines.image.gallery import Gallery


def result(seed: int) -> ImageResult:
    return ImageResult(image=Image.new("RGB", (8, 8), (seed % 256, 0, 0)), params=ImageParams(prompt="p", seed=seed), model="m", seconds=0.1)


def fill(folder: Path, count: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8)).save(folder / "00000-0.png")
    for i in range(1, count):
        os.link(folder / "00000-0.png", folder / f"{i:05d}-{i}.png")


def test_a_big_gallery_is_read_once_then_kept_up_to_date_by_the_apps_own_saves(tmp_path, monkeypatch):
    folder = tmp_path / "images"
    fill(folder, 3000)
    gallery = Gallery(folder)
    reads = []
    scandir = os.scandir
    monkeypatch.setattr(gallery_module.os, "scandir", lambda p: reads.append(p) or scandir(p))
    assert gallery.newest(3)[0].name == "02999-2999.png"
    for seed in (11, 12, 13):
        saved = gallery.save(result(seed))
        assert saved.name == f"{3000 + seed - 11:05d}-{seed}.png"
        assert gallery.newest(2)[0] == saved
    assert len(reads) == 1, "the folder was read again after the app's own saves"
    assert len(gallery.newest(10_000)) == 3003


def test_changes_behind_the_apps_back_show(tmp_path):
    folder = tmp_path / "images"
    fill(folder, 5)
    gallery = Gallery(folder)
    assert [p.name for p in gallery.newest(2)] == ["00004-4.png", "00003-3.png"]
    (folder / "00004-4.png").unlink()  # deleted by hand
    assert [p.name for p in gallery.newest(2)] == ["00003-3.png", "00002-2.png"]
    shutil.copy(folder / "00000-0.png", folder / "00042-7.png")  # copied in by hand
    assert gallery.newest(1)[0].name == "00042-7.png"
    assert gallery.save(result(8)).name == "00043-8.png"
    (folder / "00042-7.png").rename(folder / "00099-7.png")
    assert gallery.newest(1)[0].name == "00099-7.png"
    assert gallery.save(result(9)).name == "00100-9.png"


def test_a_file_deleted_while_the_listing_was_kept_is_never_listed(tmp_path):
    folder = tmp_path / "images"
    fill(folder, 3)
    gallery = Gallery(folder)
    saved = gallery.save(result(5))
    stamp, entries = gallery_module._listings[folder]
    saved.unlink()
    gallery_module._listings[folder] = (os.stat(folder).st_mtime_ns, entries)  # as if in the same clock tick
    assert saved not in gallery.newest(10)


def test_saves_from_many_threads_each_keep_their_own_file_and_number(tmp_path):
    folder = tmp_path / "images"
    fill(folder, 50)
    gallery = Gallery(folder)
    saved: list[Path] = []
    lock = threading.Lock()

    def work(first: int) -> None:
        for seed in range(first, first + 10):
            path = Gallery(folder).save(result(seed))
            with lock:
                saved.append(path)

    threads = [threading.Thread(target=work, args=(100 * t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(saved)) == 40 and all(p.is_file() for p in saved)
    numbers = sorted(int(p.name.split("-")[0]) for p in saved)
    assert numbers == list(range(50, 90)), "every save got a number of its own"
    assert set(gallery.newest(40)) == set(saved)

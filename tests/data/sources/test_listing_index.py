"""The listing index: a second start lists nothing, a changed folder rebuilds, ranks wait for rank 0."""

from __future__ import annotations

import os

import pytest

from fastssl.data.sources import listing_index
from fastssl.data.sources.factory import open_source
from fastssl.data.sources.image_folder import list_image_folder
from fastssl.data.tools.index import index_path


def _folder(root, per_class=3):
    for c in ("cat", "dog"):
        (root / c / "sub").mkdir(parents=True)
        for i in range(per_class):
            (root / c / f"{i}.png").write_bytes(b"")
        (root / c / "sub" / "x.jpg").write_bytes(b"")
    return root


def _bump(path):
    """A new mtime even on file systems with coarse timestamps."""
    t = os.stat(path).st_mtime_ns + 2_000_000_000
    os.utime(path, ns=(t, t))


def test_second_start_lists_nothing(tmp_path):
    root = _folder(tmp_path / "data")
    first = open_source(str(root), "folder", "all")
    assert (root / ".fastssl-index" / "index.npz").exists()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(os, "scandir", lambda *a, **k: pytest.fail(f"scandir({a}) on a second start"))
        mp.setattr(os, "listdir", lambda *a, **k: pytest.fail(f"listdir({a}) on a second start"))
        second = open_source(str(root), "folder", "all")
    assert second.paths == first.paths and second.labels.tolist() == first.labels.tolist()
    assert [os.path.relpath(p, root) for p in first.paths] == [
        "cat/0.png", "cat/1.png", "cat/2.png", "cat/sub/x.jpg", "dog/0.png", "dog/1.png", "dog/2.png", "dog/sub/x.jpg"]


@pytest.mark.parametrize("where", ["root", "class", "nested"])
def test_a_changed_folder_rebuilds(tmp_path, where):
    root = _folder(tmp_path / "data")
    assert len(open_source(str(root), "folder", "all")) == 8
    folder = {"root": root, "class": root / "dog", "nested": root / "dog" / "sub"}[where]
    (folder / "new.png").write_bytes(b"")
    _bump(folder)
    src = open_source(str(root), "folder", "all")
    # A new image in the root of a class layout is not a class image: the listing is rebuilt all the same.
    assert len(src) == (8 if where == "root" else 9)
    if where != "root":
        assert any(p.endswith("new.png") for p in src.paths)


def test_index_dir_and_the_cli_build_ahead(tmp_path):
    root = _folder(tmp_path / "data")
    out, n, _ = index_path(str(root), str(tmp_path / "idx"))
    assert n == 8 and out.startswith(str(tmp_path / "idx")) and not (root / ".fastssl-index").exists()
    from fastssl.config import DataConfig

    cfg = DataConfig(index_dir=str(tmp_path / "idx"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(os, "scandir", lambda *a, **k: pytest.fail("listed after `fastssl data index`"))
        assert len(open_source(str(root), "folder", "all", cfg)) == 8


def test_file_list_index_follows_the_list_file(tmp_path):
    (tmp_path / "a.png").write_bytes(b"")
    lst = tmp_path / "list.txt"
    lst.write_text("a.png 1\n")
    assert open_source(str(lst), "filelist", "all").labels.tolist() == [1]
    lst.write_text("a.png 1\na.png 2\n")
    _bump(lst)
    assert open_source(str(lst), "filelist", "all").labels.tolist() == [1, 2]


def test_other_ranks_wait_for_rank_0(tmp_path, monkeypatch):
    """Rank 0 builds then reaches the barrier; another rank reads after the barrier, listing nothing."""
    root = _folder(tmp_path / "data")
    events = []
    monkeypatch.setattr(listing_index, "_process_group", lambda: (0, lambda: events.append("barrier")))
    built = listing_index.cached_listing(str(root), lambda r: events.append("build") or list_image_folder(r))
    assert events == ["build", "barrier"]
    events.clear()
    monkeypatch.setattr(listing_index, "_process_group", lambda: (1, lambda: events.append("barrier")))
    other = listing_index.cached_listing(str(root), lambda r: events.append("build"))
    assert events == ["barrier"] and other.paths == built.paths

import os

import pytest

from hashtool.errors import ArgumentError
from hashtool.files.walk import INDEX_MARKER, walk_images

EXTS = (".png", ".jpg")


def make(tmp_path, rel, data=b"x"):
    p = tmp_path / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    return p


def rels(result):
    return [f.rel for f in result.files]


def test_rules(tmp_path):
    for rel in ["a.png", "B.JPG", "sub/c.png", "sub/deeper/d.jpg", ".hidden.png", "._a.png", ".git/e.png",
                "notes.txt", "sub/skip/f.png", "idx/g.png"]:
        make(tmp_path, rel)
    make(tmp_path, f"idx/{INDEX_MARKER}")
    r = walk_images(tmp_path, EXTS, exclude=["sub/skip"])
    assert rels(r) == ["B.JPG", "a.png", "sub/c.png", "sub/deeper/d.jpg"]
    assert r.ignored == 1  # notes.txt
    assert r.files[1].size == 1 and r.files[1].mtime_ns == os.stat(tmp_path / "a.png").st_mtime_ns


def test_exclude_by_name_glob(tmp_path):
    for rel in ["a.png", "thumbs/b.png", "c_thumb.png"]:
        make(tmp_path, rel)
    assert rels(walk_images(tmp_path, EXTS, exclude=["*_thumb.png", "thumbs"])) == ["a.png"]


def test_symlinks_not_followed_unless_asked(tmp_path):
    make(tmp_path, "real/a.png")
    outside = tmp_path.parent / (tmp_path.name + "_outside")
    make(outside, "b.png")
    os.symlink(outside, tmp_path / "real" / "link")
    os.symlink(tmp_path / "real", tmp_path / "real" / "loop")
    assert rels(walk_images(tmp_path, EXTS)) == ["real/a.png"]
    followed = rels(walk_images(tmp_path, EXTS, follow_symlinks=True))
    assert "real/link/b.png" in followed and "real/a.png" in followed
    assert len(followed) == 2  # the loop is walked once


def test_missing_and_non_folder(tmp_path):
    with pytest.raises(ArgumentError, match="no such folder"):
        walk_images(tmp_path / "nope", EXTS)
    f = make(tmp_path, "a.png")
    with pytest.raises(ArgumentError, match="not a folder"):
        walk_images(f, EXTS)


def test_every_entry_lands_in_one_bucket(tmp_path):
    """files + ignored + errors == seen; a FIFO with an image name is reported, never opened; links not
    followed are ignored; a dangling link, when followed, is reported."""
    (tmp_path / "a.png").write_bytes(b"x")
    (tmp_path / "b.txt").write_bytes(b"x")
    os.mkfifo(tmp_path / "pipe.png")
    os.mkfifo(tmp_path / "pipe.log")
    os.symlink(tmp_path / "a.png", tmp_path / "link.png")
    os.symlink(tmp_path / "missing.png", tmp_path / "dangling.png")
    (tmp_path / ".hidden.png").write_bytes(b"x")
    r = walk_images(tmp_path, EXTS)
    assert rels(r) == ["a.png"] and r.ignored == 4 and r.seen == 6  # b.txt, pipe.log, two links
    assert [p for p, _ in r.errors] == ["pipe.png"] and "named pipe" in r.errors[0][1]
    f = walk_images(tmp_path, EXTS, follow_symlinks=True)
    assert rels(f) == ["a.png", "link.png"] and f.seen == 6
    assert sorted(p for p, _ in f.errors) == ["dangling.png", "pipe.png"]


def test_unreadable_covers_paths_below_an_unlisted_folder(tmp_path, monkeypatch):
    (tmp_path / "sub" / "deeper").mkdir(parents=True)
    (tmp_path / "sub" / "deeper" / "x.png").write_bytes(b"x")
    (tmp_path / "subway.png").write_bytes(b"x")
    real = os.scandir
    blocked = str((tmp_path / "sub").resolve())

    def scandir(path="."):
        if str(path) == blocked:
            raise PermissionError(13, "Permission denied")
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    r = walk_images(tmp_path, EXTS)
    assert r.unlisted == ["sub"] and rels(r) == ["subway.png"]
    assert r.unreadable("sub/deeper/x.png") and r.unreadable("sub/gone.png")
    assert not r.unreadable("subway.png") and not r.unreadable("other/x.png")

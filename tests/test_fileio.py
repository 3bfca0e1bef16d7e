import os
import stat

import pytest

from hashtool.fileio import atomic_write


def test_replaces_with_umask_permissions(tmp_path):
    p = tmp_path / "sub" / "f.bin"
    old = os.umask(0o022)
    try:
        with atomic_write(p) as f:
            f.write(b"one")
        with atomic_write(p, "w", encoding="utf-8") as f:
            f.write("two")
    finally:
        os.umask(old)
    assert p.read_text() == "two"
    assert stat.S_IMODE(p.stat().st_mode) == 0o644  # what open() gives, not mkstemp's 0600
    assert sorted(x.name for x in p.parent.iterdir()) == ["f.bin"]


def test_failure_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    p = tmp_path / "f.bin"
    p.write_bytes(b"precious")
    with pytest.raises(RuntimeError):
        with atomic_write(p) as f:
            f.write(b"half")
            raise RuntimeError("crash mid-write")
    assert p.read_bytes() == b"precious"
    assert [x.name for x in tmp_path.iterdir()] == ["f.bin"]

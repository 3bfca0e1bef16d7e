"""The Qt resource bundle reader against bundles written here in the documented format."""

import os
import struct
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hashtool.rcc import RccError, RccFile


def write_rcc(path, files: dict[str, bytes], version: int = 2, compress: bool = False) -> None:
    """A minimal rcc writer: one directory level per path component, nodes in breadth-first order."""
    tree: dict = {}
    for p, data in files.items():
        node = tree
        parts = p.split("/")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = data
    names, data_blob, name_off = b"", b"", {}

    def name_offset(name):
        nonlocal names
        if name not in name_off:
            name_off[name] = len(names)
            enc = name.encode("utf-16-be")
            names += struct.pack(">HI", len(enc) // 2, 0) + enc
        return name_off[name]

    nodes = [None]  # index 0: root
    queue = [(tree, 0, "")]
    records = {}
    while queue:
        d, idx, name = queue.pop(0)
        children = sorted(d.items())
        first = len(nodes)
        nodes.extend([None] * len(children))
        records[idx] = ("dir", name, len(children), first)
        for i, (cname, value) in enumerate(children):
            if isinstance(value, dict):
                queue.append((value, first + i, cname))
            else:
                payload = struct.pack(">I", len(value)) + zlib.compress(value) if compress else value
                records[first + i] = ("file", cname, len(data_blob), 1 if compress else 0)
                data_blob += struct.pack(">I", len(payload)) + payload
    tree_blob = b""
    for i in range(len(nodes)):
        kind, name, a, b = records[i]
        noff = 0 if i == 0 else name_offset(name)
        if kind == "dir":
            tree_blob += struct.pack(">IHII", noff, 2, a, b)
        else:
            tree_blob += struct.pack(">IHHHI", noff, b, 0, 0, a)
        if version >= 2:
            tree_blob += struct.pack(">Q", 0)
    header_len = 20 if version < 3 else 24
    tree_off = header_len
    data_off = tree_off + len(tree_blob)
    names_off = data_off + len(data_blob)
    header = b"qres" + struct.pack(">IIII", version, tree_off, data_off, names_off)
    if version >= 3:
        header += struct.pack(">I", 0)
    with open(path, "wb") as f:
        f.write(header + tree_blob + data_blob + names)


paths = st.lists(st.lists(st.text("abcxyz_.é", min_size=1, max_size=6), min_size=1, max_size=3).map("/".join),
                 min_size=1, max_size=6, unique=True)


@given(paths, st.sampled_from([1, 2, 3]), st.booleans(), st.data())
def test_reader_returns_every_written_file(tmp_path_factory, names, version, compress, data):
    # a path may not be both a file and a folder
    names = [n for n in names if not any(m.startswith(n + "/") for m in names)]
    files = {n: data.draw(st.binary(max_size=50)) for n in names}
    path = tmp_path_factory.mktemp("rcc") / "b.rcc"
    write_rcc(path, files, version, compress)
    bundle = RccFile(path)
    got = {e.path: bundle.read(e) for e in bundle.entries()}
    assert got == files


def test_corrupt_bundles_are_refused_with_the_file_name(tmp_path):
    bad = tmp_path / "x.rcc"
    bad.write_bytes(b"not a bundle at all")
    with pytest.raises(RccError, match="x.rcc: not a Qt resource bundle"):
        RccFile(bad)
    write_rcc(bad, {"a/b.png": b"12345"})
    bad.write_bytes(bad.read_bytes()[:30])
    with pytest.raises(RccError, match="truncated"):
        RccFile(bad).entries()


@pytest.mark.skipif(not os.path.isdir("/usr/share/gcompris-qt/rcc"), reason="gcompris-qt-data is not installed")
def test_a_real_gcompris_bundle_holds_decodable_photos():
    import io

    from PIL import Image

    bundle = RccFile("/usr/share/gcompris-qt/rcc/erase.rcc")
    photos = [e for e in bundle.entries() if e.path.endswith(".webp")]
    assert len(photos) >= 10
    with Image.open(io.BytesIO(bundle.read(photos[0]))) as img:
        img.load()
        assert min(img.size) >= 200

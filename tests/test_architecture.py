"""The deployment path never imports torch or onnx, and `hashtool --help` stays light."""

import json
import subprocess
import sys
import textwrap

# Packages that may import torch/onnx; everything else in hashtool must not.
TORCH_PACKAGES = ("hashtool.train", "hashtool.export")


def run_python(code: str) -> dict:
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_runtime_modules_do_not_import_torch_or_onnx():
    result = run_python(
        f"""
        import importlib, json, pkgutil, sys
        import hashtool
        heavy = {TORCH_PACKAGES!r}
        names = []
        # pkgutil.walk_packages would import the heavy packages to list their children; walk by hand.
        def walk(path, prefix):
            for info in pkgutil.iter_modules(path, prefix):
                if info.name.startswith(heavy) or info.name == "hashtool.__main__":
                    continue
                mod = importlib.import_module(info.name)
                names.append(info.name)
                if info.ispkg:
                    walk(mod.__path__, info.name + ".")
        walk(hashtool.__path__, "hashtool.")
        print(json.dumps({{"names": names, "loaded": [m for m in ("torch", "onnx", "onnxscript") if m in sys.modules]}}))
        """
    )
    assert "hashtool.codes" in result["names"] and "hashtool.cli" in result["names"]
    assert result["loaded"] == [], f"runtime modules pulled in {result['loaded']}"


def test_help_imports_nothing_heavy():
    result = run_python(
        """
        import json, sys
        from click.testing import CliRunner
        from hashtool.cli import main
        r = CliRunner().invoke(main, ["--help"])
        assert r.exit_code == 0, r.output
        heavy = [m for m in ("torch", "onnx", "onnxruntime", "numba", "PIL") if m in sys.modules]
        print(json.dumps({"heavy": heavy}))
        """
    )
    assert result["heavy"] == []


def test_torch_marker_is_detected():
    """The check above can fail: importing torch in a child process is seen."""
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        import pytest

        pytest.skip("torch not installed")
    result = run_python('import json, sys, torch; print(json.dumps({"t": "torch" in sys.modules}))')
    assert result["t"] is True


# -- the direction of imports inside hashtool (every import statement, module level or in a function) --

import ast  # noqa: E402
from pathlib import Path  # noqa: E402

SRC = Path(__file__).resolve().parent.parent / "src" / "hashtool"

# What each part may import from hashtool (besides itself). `files` is the leaf that walks folders and
# decodes images; encode, store and datasets use it and never reach sideways into one another for it.
ALLOWED = {
    "files": {"errors", "codes", "preprocess"},
    "encode": {"errors", "codes", "preprocess", "threads", "fileio", "files"},
    "datasets": {"errors", "files", "preprocess"},
    "hashindex": {"errors", "codes", "threads", "fileio"},
    "codes": {"errors"},
    "preprocess": {"errors"},
    "store": {"errors", "codes", "fileio", "files", "hashindex", "encode", "threads", "preprocess", "edits", "evaluate", "health"},
    "edits": {"errors"},
}
THIRD_PARTY_IN_FILES = {"numpy", "PIL", "pillow_heif"}  # pillow_heif: the optional [heif] decoder plugin


def hashtool_imports(path: Path) -> set[str]:
    """Top-level hashtool parts imported anywhere in ``path`` ("hashtool.files.walk" -> "files")."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        for n in names:
            parts = n.split(".")
            if parts[0] == "hashtool" and len(parts) > 1:
                out.add(parts[1])
            elif parts[0] == "hashtool" and isinstance(node, ast.ImportFrom):
                out.update(a.name for a in node.names)
    return out


def third_party_imports(path: Path) -> set[str]:
    import sys as _sys

    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module.split(".")[0])
    return {m for m in out if m != "hashtool" and m not in _sys.stdlib_module_names and m != "__future__"}


def part_files(part: str) -> list[Path]:
    p = SRC / part
    return sorted(p.rglob("*.py")) if p.is_dir() else [SRC / f"{part}.py"]


def test_imports_point_down_only():
    wrong = []
    for part, allowed in ALLOWED.items():
        for f in part_files(part):
            for dep in hashtool_imports(f) - allowed - {part}:
                wrong.append(f"{f.relative_to(SRC)} imports hashtool.{dep}")
    assert wrong == []


def test_files_leaf_needs_only_numpy_and_pillow():
    extra = {m for f in part_files("files") for m in third_party_imports(f)} - THIRD_PARTY_IN_FILES
    assert extra == set()


def test_import_checker_sees_function_level_imports(tmp_path):
    """The checker can fail: an import inside a function body is found."""
    f = tmp_path / "m.py"
    f.write_text("def g():\n    from hashtool.store.walk import walk_images\n    import hashtool.encode\n")
    assert hashtool_imports(f) == {"store", "encode"}

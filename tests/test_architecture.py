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

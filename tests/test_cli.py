import shutil
import subprocess
import sys

from click.testing import CliRunner

import hashtool
from hashtool.cli import main


def test_version_and_help():
    r = CliRunner().invoke(main, ["--version"])
    assert r.exit_code == 0 and hashtool.__version__ in r.output
    for flag in ("-h", "--help"):
        r = CliRunner().invoke(main, [flag])
        assert r.exit_code == 0 and "Usage:" in r.output


def test_every_listed_command_has_help():
    r = CliRunner().invoke(main, ["--help"])
    from hashtool.cli import COMMANDS

    for name in COMMANDS:
        assert name in r.output
        sub = CliRunner().invoke(main, [name, "--help"])
        assert sub.exit_code == 0, sub.output


def test_unknown_command_fails():
    r = CliRunner().invoke(main, ["no-such-command"])
    assert r.exit_code != 0 and "No such command" in r.output


def test_installed_entry_point_and_module_run():
    exe = shutil.which("hashtool") or str(__import__("pathlib").Path(sys.executable).with_name("hashtool"))
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and hashtool.__version__ in out.stdout
    out = subprocess.run([sys.executable, "-m", "hashtool", "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "Usage:" in out.stdout

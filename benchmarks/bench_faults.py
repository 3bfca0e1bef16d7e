"""Faults against real builds: kill -9 at seeded moments, a disk that fills half way, rebuilds under a
query loop, two builders at once. Prints a table and writes JSON + markdown.

Protocol (bundled encoder, a folder of small generated PNGs that changes before every build):

* **kill -9**: each of ``--kills`` builds runs in a child process that counts *events* (every
  ``os.fsync``, ``os.replace``, ``os.rename``, ``os.link``, ``shutil.copyfile``, each encoded batch and
  each step hook of :mod:`hashtool.store.store`) and sends itself SIGKILL at event k, k drawn (seeded)
  uniformly from 1..(most events a complete build had, plus an eighth), so some builds also finish; the
  table counts where the kills landed. Not sleeps:
  the moment is a count. After each: ``index info``, ``query`` and ``index verify`` must work, and the
  index, path by path (code and sha256), must equal either the previous build or the new one (a
  from-scratch build of the same folder).
* **disk full**: each of ``--disk-full`` builds runs in a child whose writes into the index folder (every
  Python-level ``open``/``os.fdopen``) fail with ENOSPC after a seeded number of bytes; the index must
  stay the previous one and the child must print one ``Error:`` line naming ENOSPC.
* **queries during rebuilds**: a second process queries in a loop while ``--rebuilds`` builds change
  the folder; failed queries are counted.
* **two builders**: two build processes start together on one change; one waits for the other; both
  succeed and the index equals the new state; then with ``--no-wait`` one of two is refused.

Usage: python benchmarks/bench_faults.py [--kills 100] [--disk-full 20] [--rebuilds 20] [--seed 0] [--out benchmarks/out]
Writes OUT/bench_faults.json and OUT/bench_faults.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np

HASHTOOL = [sys.executable, "-m", "hashtool"]

# The child of a killed build: counts events and kills itself at event KILL_AT (0: never); prints the count.
KILL_CHILD = textwrap.dedent("""
    import os, shutil, signal, sys
    kill_at = int(sys.argv[1]); folder, index, trace = sys.argv[2], sys.argv[3], sys.argv[4]
    count = [0]
    fd = os.open(trace, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND)
    def event(name):
        count[0] += 1
        if count[0] == kill_at:
            os.write(fd, (name + "\\n").encode())  # where it died, for the table
            os.kill(os.getpid(), signal.SIGKILL)
    def wrap(mod, name):
        real = getattr(mod, name)
        def f(*a, **k):
            event(name)
            return real(*a, **k)
        setattr(mod, name, f)
    for name in ("fsync", "replace", "rename", "link"):
        wrap(os, name)
    wrap(shutil, "copyfile")
    import hashtool.store.store as st
    st.FAULT_HOOK = lambda step: event("step:" + step)
    from hashtool.cli.index import run_build
    from hashtool.cli.progress import Progress
    real_update = Progress.update
    def update(self, *a, **k):
        event("encoded batch")
        return real_update(self, *a, **k)
    Progress.update = update
    run_build(folder, None, index, quiet=True, batch_size=8, threads=1)
    print(count[0])
""")

# The child of a disk-full build: Python-level writes below INDEX fail with ENOSPC after LIMIT bytes.
DISK_FULL_CHILD = textwrap.dedent("""
    import builtins, errno, io, os, sys
    limit = int(sys.argv[1]); folder, index = sys.argv[2], os.path.abspath(sys.argv[3])
    written = [0]
    class Full:
        def __init__(self, f, name): self._f, self._name = f, name
        def write(self, b):
            room = limit - written[0]
            if len(b) > room:
                self._f.write(b[:max(room, 0)]); written[0] = limit
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), self._name)
            written[0] += len(b)
            return self._f.write(b)
        def __enter__(self): self._f.__enter__(); return self
        def __exit__(self, *e): return self._f.__exit__(*e)
        def __getattr__(self, n): return getattr(self._f, n)
    real_open, real_fdopen = builtins.open, os.fdopen
    def is_ours(p): return isinstance(p, (str, os.PathLike)) and os.path.abspath(p).startswith(index)
    def fopen(p, mode="r", *a, **k):
        f = real_open(p, mode, *a, **k)
        return Full(f, str(p)) if is_ours(p) and any(c in mode for c in "wax+") else f
    def fdopen(fd, mode="r", *a, **k):
        f = real_fdopen(fd, mode, *a, **k)
        try: name = os.readlink(f"/proc/self/fd/{fd}")
        except OSError: name = ""
        return Full(f, name) if name.startswith(index) and any(c in mode for c in "wax+") else f
    builtins.open = io.open = fopen
    os.fdopen = fdopen
    sys.argv = ["hashtool", "index", "build", folder, "--index", index, "--quiet", "--threads", "1"]
    from hashtool.cli import main
    main()
""")

QUERY_LOOP = textwrap.dedent("""
    import sys, time, traceback
    from click.testing import CliRunner
    from hashtool.cli import main
    index, image, stop = sys.argv[1], sys.argv[2], sys.argv[3]
    import os
    ok = failed = 0; errors = []
    runner = CliRunner()
    while not os.path.exists(stop):
        r = runner.invoke(main, ["query", image, "-k", "3", "--index", index, "--json", "--threads", "1"])
        if r.exit_code == 0 and r.stdout.count("\\n") >= 1:
            ok += 1
        else:
            failed += 1; errors.append((r.output or repr(r.exception))[-300:])
    print(ok, failed); print("\\n".join(errors[:5]))
""")


def child_env() -> dict:
    env = dict(os.environ)
    src = str(Path(__file__).resolve().parent.parent / "src")
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    env["HASHTOOL_THREADS"] = "1"
    return env


class Folder:
    """A folder of small PNGs that changes, seeded, between builds (add, rewrite, touch, delete)."""

    def __init__(self, root: Path, rng: np.random.Generator, n: int = 24):
        self.root, self.rng, self.serial = root, rng, 0
        root.mkdir(parents=True)
        for _ in range(n):
            self.add()

    def add(self) -> None:
        from PIL import Image

        self.serial += 1
        sub = self.root / f"d{self.serial % 3}"
        sub.mkdir(exist_ok=True)
        Image.fromarray(self.rng.integers(0, 255, (28, 28), dtype=np.uint8)).save(sub / f"img{self.serial}.png")

    def change(self) -> None:
        from PIL import Image

        files = sorted(self.root.rglob("*.png"))
        for _ in range(int(self.rng.integers(1, 5))):
            op = self.rng.integers(0, 4)
            if op == 0 or len(files) < 6:
                self.add()
            elif op == 1:
                f = files[self.rng.integers(len(files))]
                if f.exists():
                    Image.fromarray(self.rng.integers(0, 255, (28, 28), dtype=np.uint8)).save(f)
            elif op == 2:
                f = files[self.rng.integers(len(files))]
                if f.exists():
                    st = f.stat()
                    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
            else:
                f = files[self.rng.integers(len(files))]
                if f.exists():
                    f.unlink()


def index_state(idx: Path) -> dict[str, tuple[str, str]]:
    """path -> (code hex, sha256) of the live generation."""
    from hashtool.hashindex import load_index
    from hashtool.store.store import IndexStore

    store = IndexStore(idx)
    with store.reading() as gen, gen.catalog() as cat:
        index = load_index(gen.codes_path, mmap=False)
        files = cat.all_files()
    codes = {i: bytes(c).hex() for i, c in zip(index.ids.tolist(), index.codes())}
    if len(codes) != len(files):
        raise AssertionError(f"{idx}: {len(codes)} codes but {len(files)} catalog rows")
    return {rel: (codes[row[0]], row[3]) for rel, row in files.items()}


def scratch_state(folder: Path, work: Path) -> dict:
    """What a correct build of ``folder`` holds: a from-scratch build into a fresh index."""
    from hashtool.cli.index import run_build

    idx = work / f"scratch-{time.monotonic_ns()}"
    run_build(str(folder), None, str(idx), quiet=True, threads=1)
    state = index_state(idx)
    shutil.rmtree(idx)
    return state


def cli_ok(*args) -> tuple[bool, str]:
    from click.testing import CliRunner

    from hashtool.cli import main

    r = CliRunner().invoke(main, [str(a) for a in args])
    return r.exit_code == 0, r.output[-500:]


def check_usable(idx: Path, folder: Path) -> list[str]:
    """`index info`, `query` and `index verify` on the index; the problems found."""
    problems = []
    image = next(iter(sorted(folder.rglob("*.png"))))
    for args in (["index", "info", "--index", idx], ["query", image, "--index", idx, "-k", "3"],
                 ["index", "verify", "--index", idx]):
        ok, out = cli_ok(*args)
        if not ok:
            problems.append(f"{' '.join(map(str, args[:2]))}: {out}")
    return problems


def first_build(work: Path, name: str, seed: int):
    """(rng, folder, index) after a first, complete build of a new seeded folder."""
    from hashtool.cli.index import run_build

    rng = np.random.default_rng(seed)
    folder = Folder(work / f"{name}-images", rng)
    idx = work / f"{name}-index"
    run_build(str(folder.root), None, str(idx), quiet=True, threads=1)
    return rng, folder, idx


def kill_child(k: int, folder: Path, idx: Path, trace: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", KILL_CHILD, str(k), str(folder), str(idx), str(trace)], env=child_env(),
                          capture_output=True, text=True)


def kill_builds(n: int, seed: int, work: Path) -> dict:
    from hashtool.cli.index import run_build

    rng, folder, idx = first_build(work, "kill", seed + 0)
    trace = work / "kill-trace"
    folder.change()
    dry = kill_child(0, folder.root, idx, trace)  # a complete build with changes: how many events one has
    events = int(dry.stdout.split()[-1])
    prev = index_state(idx)
    out = {"builds": n, "killed": 0, "finished": 0, "equal_previous": 0, "equal_new": 0, "bad": [], "events_max": events,
           "killed_at": {}}
    for b in range(n):
        folder.change()
        new = scratch_state(folder.root, work)
        k = int(rng.integers(1, events + events // 8 + 2))  # about one in ten builds gets to finish
        p = kill_child(k, folder.root, idx, trace)
        if p.returncode == -9:
            out["killed"] += 1
            where = trace.read_text().strip() or "?"
            out["killed_at"][where] = out["killed_at"].get(where, 0) + 1
        elif p.returncode == 0:
            out["finished"] += 1
            events = max(events, int(p.stdout.split()[-1]))
        else:
            out["bad"].append(f"build {b}: exit {p.returncode}: {p.stderr[-300:]}")
            continue
        problems = check_usable(idx, folder.root)
        now = index_state(idx)
        if now == prev and now != new:
            out["equal_previous"] += 1
        elif now == new:
            out["equal_new"] += 1
        else:
            problems.append("index equals neither the previous build nor the new one")
        if problems:
            out["bad"].append(f"build {b} (kill at event {k}): {problems}")
        run_build(str(folder.root), None, str(idx), quiet=True, threads=1)  # finish it, as the user would
        prev = index_state(idx)
        if prev != new:
            out["bad"].append(f"build {b}: the rebuild after the kill differs from a from-scratch build")
    out["events_max"] = events
    return out


def disk_full_builds(n: int, seed: int, work: Path) -> dict:
    from hashtool.cli.index import run_build

    rng, folder, idx = first_build(work, "full", seed + 1)
    # the bytes a build writes through Python (codes, log, CURRENT); sqlite writes the catalog in C
    size = sum(p.stat().st_size for p in idx.rglob("*") if p.name in ("codes.hidx", "build.log", "CURRENT"))
    out = {"builds": n, "refused_cleanly": 0, "finished": 0, "bad": [], "messages": []}
    for b in range(n):
        prev = index_state(idx)
        folder.change()
        limit = int(rng.integers(0, size))
        p = subprocess.run([sys.executable, "-c", DISK_FULL_CHILD, str(limit), str(folder.root), str(idx)],
                           env=child_env(), capture_output=True, text=True)
        lines = p.stderr.strip().splitlines()
        if p.returncode == 0:
            out["finished"] += 1  # the writes fitted
        elif p.returncode == 1 and lines and lines[-1].startswith("Error: ") and "No space left" in lines[-1] \
                and "Traceback" not in p.stderr and index_state(idx) == prev:
            out["refused_cleanly"] += 1
            if len(out["messages"]) < 2:
                out["messages"].append(lines[-1])
        else:
            out["bad"].append(f"build {b} (limit {limit} B): exit {p.returncode}: {p.stderr[-400:]}")
        out["bad"] += [f"build {b}: {x}" for x in check_usable(idx, folder.root)]
        run_build(str(folder.root), None, str(idx), quiet=True, threads=1)
    return out


def rebuilds_under_queries(n: int, seed: int, work: Path) -> dict:
    from hashtool.cli.index import run_build

    rng, folder, idx = first_build(work, "q", seed + 2)
    query_img = work / "query.png"
    shutil.copy(sorted(folder.root.rglob("*.png"))[0], query_img)
    stop = work / "stop-queries"
    loop = subprocess.Popen([sys.executable, "-c", QUERY_LOOP, str(idx), str(query_img), str(stop)], env=child_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(2)  # let the loop start querying (not a fault timing: the rebuilds below are what is measured)
    t0 = time.perf_counter()
    for _ in range(n):
        folder.change()
        run_build(str(folder.root), None, str(idx), quiet=True, threads=1)
    seconds = time.perf_counter() - t0
    stop.touch()
    stdout, stderr = loop.communicate(timeout=120)
    ok, failed = (int(x) for x in stdout.split("\n")[0].split())
    return {"rebuilds": n, "queries_ok": ok, "queries_failed": failed, "seconds": seconds,
            "errors": stdout.split("\n", 1)[1].strip()[:1000], "stderr": stderr[-500:]}


def two_builders(work: Path, seed: int) -> dict:
    rng, folder, idx = first_build(work, "two", seed + 3)
    out = {}
    for mode in ("wait", "no-wait"):
        folder.change()
        new = scratch_state(folder.root, work)
        cmd = HASHTOOL + ["index", "build", str(folder.root), "--index", str(idx), "--threads", "1"]
        extra = ["--no-wait"] if mode == "no-wait" else []
        procs = [subprocess.Popen(cmd + extra, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(2)]
        res = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
        codes = sorted(r for r, _ in res)
        out[mode] = {
            "exit_codes": codes,
            "waited": any("waiting" in e for _, e in res),
            "refused": [e.strip().splitlines()[-1] for r, e in res if r != 0],
            "index_equals_new": index_state(idx) == new,
            "usable": not check_usable(idx, folder.root),
        }
    return out


def markdown(res: dict, meta: dict) -> str:
    k, d, q, t = res["kill"], res["disk_full"], res["queries"], res["two_builders"]
    return "\n".join([
        f"Command: `{meta['command']}`; load average before: {meta['load_before']}; {meta['seconds']:.0f} s in all.",
        "",
        "| fault | runs | outcome |",
        "|---|---|---|",
        f"| kill -9 at a seeded event (of about {k['events_max']} per build) of a real build | {k['builds']} | "
        f"{k['killed']} killed, {k['finished']} finished; index = previous build {k['equal_previous']}, = new build "
        f"{k['equal_new']}; info/query/verify failures and other states: {len(k['bad'])} |",
        f"| (where the kills landed) | | {', '.join(f'{w}: {c}' for w, c in sorted(k['killed_at'].items()))} |",
        f"| disk full (ENOSPC after a seeded byte count) | {d['builds']} | {d['refused_cleanly']} refused with one "
        f"`Error:` line and the previous index intact, {d['finished']} fitted; other outcomes: {len(d['bad'])} |",
        f"| rebuilds while another process queries in a loop | {q['rebuilds']} | {q['queries_ok']} queries answered, "
        f"{q['queries_failed']} failed |",
        f"| two builders at once | 2 | waiting: exit {t['wait']['exit_codes']}, one waited: {t['wait']['waited']}, "
        f"index = new: {t['wait']['index_equals_new']}; --no-wait: exit {t['no-wait']['exit_codes']}, "
        f"index = new: {t['no-wait']['index_equals_new']} |",
        "",
        f"Disk-full message, as printed: `{(d['messages'] or [''])[0]}`",
        f"--no-wait refusal, as printed: `{(t['no-wait']['refused'] or [''])[0]}`",
    ])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kills", type=int, default=100)
    ap.add_argument("--disk-full", type=int, default=20)
    ap.add_argument("--rebuilds", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/out"))
    args = ap.parse_args(argv)
    os.environ["HASHTOOL_THREADS"] = "1"
    t0 = time.perf_counter()
    load = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="hashtool-faults-") as tmp:
        work = Path(tmp)
        res = {"kill": kill_builds(args.kills, args.seed, work), "disk_full": disk_full_builds(args.disk_full, args.seed, work),
               "queries": rebuilds_under_queries(args.rebuilds, args.seed, work), "two_builders": two_builders(work, args.seed)}
    meta = {"command": "python " + " ".join(["benchmarks/bench_faults.py"] + (argv if argv is not None else sys.argv[1:])),
            "load_before": " ".join(f"{x:.2f}" for x in load), "seconds": time.perf_counter() - t0}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench_faults.json").write_text(json.dumps({"meta": meta, **res}, indent=1) + "\n")
    md = markdown(res, meta)
    (args.out / "bench_faults.md").write_text(md + "\n")
    print(md)
    bad = res["kill"]["bad"] + res["disk_full"]["bad"]
    for line in bad[:20]:
        print("BAD", line, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

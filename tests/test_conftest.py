"""Tests of the course's pytest plugin (conftest.py): the stages, and the one nbval internal it relies on."""

from __future__ import annotations

import inspect
import re
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
import conftest


def test_nbval_still_reads_notebooks_where_conftest_hands_it_a_chapter():
    """Does nbval's IPyNbFile.collect still read its file with the module-level `nbformat.read`?

    conftest.MystNotebook replaces `nbval.plugin.nbformat` while collecting a MyST chapter, so that
    nbval receives jupytext's conversion. An nbval upgrade that reads notebooks another way must fail
    here, loudly, rather than collect chapters wrongly.
    """
    import nbval.plugin

    assert version("nbval") == "0.11.0", "nbval was upgraded: check conftest.MystNotebook.collect"
    assert "nbformat.read(" in inspect.getsource(nbval.plugin.IPyNbFile.collect)
    assert nbval.plugin.nbformat.__name__ == "nbformat"


def test_every_test_file_belongs_to_exactly_one_stage():
    """Is every test module, chapter and solution notebook run by exactly one stage?"""
    files = {*REPO.glob("tests/test_*.py"), *REPO.glob("chapters/*.md"), *REPO.glob("solutions/*/*.ipynb")}
    owners = {f: [s for s in conftest.STAGES if f in conftest.stage_paths(s)] for f in files}
    assert {f.name: o for f, o in owners.items() if len(o) != 1} == {}
    assert Path(__file__) in conftest.stage_paths("unit")
    assert REPO / "tests" / "test_grading.py" in conftest.stage_paths("grading")


def runner():
    """scripts/run_tests.py as a module."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("run_tests", REPO / "scripts" / "run_tests.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("args, expected", [
    (["-m", "not slow"], ["tests", "chapters", "solutions", "-m", "not slow"]),
    (["tests/test_data.py", "-x"], ["tests/test_data.py", "-x"]),
])
def test_runner_passes_arguments_to_one_pytest(monkeypatch, args, expected):
    """With arguments, does scripts/run_tests.py run one pytest with them (default paths only when none is given)?"""
    module, calls = runner(), []
    done = type("Done", (), {"returncode": 0})
    monkeypatch.setattr(module.subprocess, "run", lambda cmd, **kw: calls.append(cmd) or done)
    assert module.main(args) == 0
    assert calls == [[*module.PYTEST, *expected]]


def test_the_cpu_line_says_when_onednn_is_limited(monkeypatch):
    """Does the stage table's CPU name the vector instructions, and oneDNN's limit when one is set?"""
    module = runner()
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    plain = module.cpu()
    assert "oneDNN" not in plain and re.search(r"\((AVX-512|AVX2, no AVX-512|no AVX2)\), ", plain), plain
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    limited = module.cpu()
    assert "; oneDNN limited to AVX2), " in limited, limited
    assert limited.replace("; oneDNN limited to AVX2)", ")") == plain, limited


def test_the_benchmarks_describe_the_cpu_as_the_stage_table_does(monkeypatch):
    """Do the stage table and the benchmarks print one description of the CPU (benchmarks/machine.py), its
    notable flags read from /proc/cpuinfo, and the device line of the MNIST benchmark name both?"""
    from benchmarks import machine

    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)  # (a slow host's emulation sets it)
    module = runner()
    assert module.cpu is machine.cpu and module.busy_seconds is machine.busy_seconds
    name, flags = machine.cpu_info()
    assert name and name == machine.cpu().split(" (")[0]
    assert machine.flags().split() == [f for f in machine.NOTABLE_FLAGS if f in flags] or not flags
    monkeypatch.setattr(machine, "cpu_info", lambda: ("Some CPU", {"sse2", "avx512f", "avx2", "amx_bf16"}))
    assert machine.flags() == "avx2 avx512f amx_bf16"
    assert machine.cpu().startswith("Some CPU (AVX-512), ")
    monkeypatch.setattr(machine, "cpu_info", lambda: ("Old CPU", {"sse2", "avx2"}))
    assert machine.cpu().startswith("Old CPU (AVX2, no AVX-512), ") and machine.flags() == "avx2"
    monkeypatch.setattr(machine, "cpu_info", lambda: ("Older CPU", {"sse2"}))
    assert machine.flags().startswith("none of avx2") and "(no AVX2)" in machine.cpu()
    for script in ("grading_benchmark.py", "mnist_benchmark.py", "ex09_cpu_profile.py"):
        text = (REPO / "benchmarks" / script).read_text()
        assert "machine.cpu()" in text and "/proc/cpuinfo" not in text, script


def test_the_stage_table_ends_with_the_cpu_and_its_flags(monkeypatch, capsys):
    """Does the table that `.ci/run` prints give every stage a row, then the CPU and its notable flags?"""
    from benchmarks import machine

    module = runner()
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.setattr(machine, "cpu_info", lambda: ("Test CPU 9000", {"sse2", "avx2", "fma"}))
    monkeypatch.setattr(module, "warm_kernels", lambda: {})

    def fake_schedule(stages, warm):
        for stage in stages.values():
            stage.seconds, stage.cpu_seconds, stage.status = 61.0, 90.0, 0

    monkeypatch.setattr(module, "schedule", fake_schedule)
    assert module.main([]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in out if line.split()[:1] and line.split()[0] in conftest.STAGES] \
        == list(conftest.STAGES)
    total = next(line for line in out if line.startswith("total"))
    assert "on Test CPU 9000 (AVX2, no AVX-512), " in total, total
    assert out[out.index(total) + 1] == "CPU flags: avx2 fma", out


def test_stage_counts_come_from_the_junit_report(tmp_path):
    """Are a stage's passed, failed (errors included) and skipped tests read from its JUnit report?"""
    report = tmp_path / "stage.xml"
    report.write_text('<testsuites><testsuite tests="7" failures="1" errors="1" skipped="2"/></testsuites>')
    assert runner().counts(report) == {"passed": 3, "failed": 2, "skipped": 2}
    assert runner().counts(tmp_path / "missing.xml") == {"passed": 0, "failed": 0, "skipped": 0}


@pytest.mark.parametrize("seconds, shown", [(0, "0:00.0"), (59.94, "0:59.9"), (359.96, "6:00.0"),
                                             (503.04, "8:23.0"), (3600, "60:00.0")])
def test_stage_times_read_as_minutes(seconds, shown):
    """Are the table's times m:ss.s, rounded before they are split (359.96 s once read 5:60.0)?"""
    assert runner().minutes(seconds) == shown


@pytest.mark.parametrize("at_once", [1, 2])
def test_stages_run_in_their_order_one_or_two_at_a_time(monkeypatch, at_once):
    """Does each stage start only after those it comes AFTER, no more than CONCURRENT at once, and a stage
    that NEEDS a failed one fail at once without running?"""
    import threading
    import time

    module, events, running, most = runner(), [], set(), [0]
    monkeypatch.setattr(module, "CONCURRENT", at_once)
    lock = threading.Lock()

    def fake_run(stage, origin, warm):
        with lock:
            running.add(stage.name)
            most[0] = max(most[0], len(running))
            events.append(("start", stage.name))
        time.sleep(0.05)
        with lock:
            running.discard(stage.name)
            events.append(("end", stage.name))
        stage.status = 1 if stage.name == "chapters" else 0

    monkeypatch.setattr(module, "run_stage", fake_run)
    monkeypatch.setattr(module, "POLL", 0.01)
    stages = {name: module.Stage(name) for name in conftest.STAGES}
    module.schedule(stages, {})
    started = [name for kind, name in events if kind == "start"]
    assert set(started) == set(conftest.STAGES) - {"book", "browser"}  # book needs chapters, which failed
    assert stages["book"].status == 1 and stages["book"].tally["failed"] == 1
    assert most[0] == module.CONCURRENT
    for stage, befores in module.AFTER.items():
        for before in befores:
            if stage in started:
                assert events.index(("end", before)) < events.index(("start", stage)), (before, stage)


def test_only_notebook_stages_run_in_warm_kernels():
    """Are the chapters and solutions run with the warm kernel (when there is one), and no other stage?"""
    module = runner()
    warm = {"DCV_WARM_KERNEL_SOCKET": "/x"}
    flag = f"--nbval-kernel-name={module.WARM_KERNEL}"
    assert flag in module.command("chapters", warm) and flag in module.command("solutions", warm)
    assert flag not in module.command("chapters", {}) and flag not in module.command("unit", warm)


def test_a_parallel_stage_starts_its_files_in_the_order_given(tmp_path):
    """Do a stage's two workers start its files in the order of its command line (the slowest first), where
    xdist alone starts the files with the most tests first?"""
    module = runner()
    log = tmp_path / "started.log"
    body = ("import time\n\n\ndef test_{i}():\n    with open({log!r}, 'a') as f:\n"
            "        f.write('{name}\\n')\n    time.sleep({s})\n")
    for name, tests, seconds in [("slow_a", 1, 1.0), ("slow_b", 1, 1.0), ("many", 6, 0.05)]:
        (tmp_path / f"test_{name}.py").write_text("".join(
            body.format(i=i, log=str(log), name=name, s=seconds) for i in range(tests)))
    files = ["test_slow_a.py", "test_slow_b.py", "test_many.py"]
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "2",
                             *module.XDIST, "--rootdir", str(tmp_path), *files],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert sorted(log.read_text().split()[:2]) == ["slow_a", "slow_b"], log.read_text()


def test_stage_paths_start_with_the_slowest_files():
    """Does each stage list the files of SLOWEST_FIRST first, in that order?"""
    for stage in conftest.STAGES:
        names = [str(p.relative_to(REPO)) for p in conftest.stage_paths(stage)]
        slowest = [next(n for n in names if n.startswith(s)) for s in conftest.SLOWEST_FIRST
                   if any(n.startswith(s) for n in names)]
        assert names[:len(slowest)] == slowest, (stage, names)
    assert len([s for s in conftest.SLOWEST_FIRST if any(
        str(p.relative_to(REPO)).startswith(s) for st in conftest.STAGES for p in conftest.stage_paths(st))]) == len(
        conftest.SLOWEST_FIRST), "a file of SLOWEST_FIRST is in no stage"


def test_notebook_stages_get_a_temporary_folder_removed_with_them(tmp_path, monkeypatch):
    """Does each notebook stage run with a $TMPDIR of its own, gone once the stage ends with what its kernels
    left there (nbval kills them before their clean-up at exit), and every other stage with the system's?"""
    import os
    import tempfile

    module = runner()
    script = ("import os, tempfile; folder = tempfile.mkdtemp(prefix='left-by-a-stage-'); "
              "print('TMP', os.environ.get('TMPDIR', '-'), folder)")
    monkeypatch.setattr(module, "command", lambda stage, warm: [sys.executable, "-c", script])
    monkeypatch.setattr(module, "REPORTS", tmp_path)
    monkeypatch.setattr(module, "CHAPTERS_CACHED", tmp_path / "cached")  # the chapters stage's, not the book's
    monkeypatch.setattr(module, "kernels_cpu", lambda log: 0.0)
    monkeypatch.delenv("TMPDIR", raising=False)
    seen = {}
    for name in ("solutions", "chapters", "unit"):
        module.run_stage(module.Stage(name), 0.0, {})
        words = (tmp_path / f"{name}.log").read_text().split()
        seen[name] = words[words.index("TMP") + 1:words.index("TMP") + 3]
    os.rmdir(seen["unit"][1])  # the unit stage's, made in the system's folder
    for name in ("solutions", "chapters"):
        env, folder = seen[name]
        assert os.path.dirname(folder) == env and os.path.basename(env).startswith(f"dcv-{name}-"), seen
        assert not os.path.exists(env)
    assert seen["unit"][0] == "-" and os.path.dirname(seen["unit"][1]) == tempfile.gettempdir(), seen


def test_machine_busy_time_counts_this_process():
    """Does the machine's busy CPU time grow by at least the CPU time this process just spent?"""
    import time

    module = runner()
    before, cpu = module.busy_seconds(), time.process_time()
    while time.process_time() - cpu < 0.3:
        pass
    assert module.busy_seconds() - before >= 0.25


def test_kernels_cpu_waits_for_every_kernel_started(tmp_path):
    """Does a stage's CPU include a warm kernel that its zygote logs after the stage's pytest has exited
    (nbval kills a kernel's process; the zygote reaps the kernel, then writes its line)?"""
    import threading

    module, log = runner(), tmp_path / "stage.kernel-cpu"
    log.write_text("started 11\nstarted 12\nended 11 1.500\n")
    late = threading.Timer(0.5, lambda: log.open("a").write("ended 12 116.250\n"))
    late.start()
    try:
        assert module.kernels_cpu(log) == pytest.approx(117.75)
    finally:
        late.cancel()
    log.write_text("started 13\nended 14 -\nstarted 15\nended 15 2.000\n")  # 13 never ends; 14's time unknown
    assert module.kernels_cpu(log, wait=0.3) == pytest.approx(2.0)
    assert module.kernels_cpu(tmp_path / "none") == 0.0


def test_a_stage_counts_the_cpu_of_what_its_processes_abandon():
    """Does scripts/reap.py (under which each stage runs) wait for the processes a command leaves behind, so that
    their CPU is in the stage's rusage, keep the command's exit status, and name an orphan it stops waiting for?"""
    import os
    import subprocess

    burn = "import time; t = time.process_time()\nwhile time.process_time() - t < 1: pass"
    orphan = f"({sys.executable} -c '{burn}' &); exit 3"  # the parent exits at once, its child burns 1 CPU-s
    reap = [sys.executable, str(REPO / "scripts" / "reap.py")]

    def run(command: list[str]) -> tuple[int, float, str]:
        process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
        _, status, usage = os.wait4(process.pid, 0)
        return os.waitstatus_to_exitcode(status), usage.ru_utime + usage.ru_stime, process.stderr.read()

    status, cpu, _ = run(["bash", "-c", orphan])
    assert status == 3 and cpu < 0.5  # without it, the orphan's CPU is lost: init reaps it
    status, cpu, _ = run([*reap, "bash", "-c", orphan])
    assert status == 3 and cpu >= 0.9
    status, _, said = run([*reap, "--linger", "0.2", "bash", "-c", "(exec sleep 3 &); kill -9 $$"])
    assert status == 128 + 9 and "1 process(es) still running" in said and "(sleep)" in said, said

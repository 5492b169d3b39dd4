"""Run a command and reap every process it leaves behind, so that the caller's CPU count includes theirs.

`python scripts/reap.py [--linger SECONDS] COMMAND...` runs COMMAND as a child of a child subreaper
(prctl PR_SET_CHILD_SUBREAPER): a process that COMMAND starts and abandons (Chromium's, once Playwright's
driver has gone) becomes this process's child instead of init's. It waits for COMMAND, then for those
orphans for at most SECONDS (default 30), and exits with COMMAND's status; the CPU time of everything
it waited for is then in its own rusage for its children, which the caller's wait4 reads
(scripts/run_tests.py, one per stage). An orphan still running after SECONDS is named on stderr and
left running. SIGTERM is passed on to COMMAND; Ctrl-C reaches it from the terminal, and this process
goes on reaping.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from autograder.zygote import _prctl  # the one prctl wrapper

PR_SET_CHILD_SUBREAPER = 36
LINGER = 30.0


def reap(command: list[str], linger: float = LINGER) -> int:
    """Run command, reap it and every orphan it leaves (waiting at most linger s for them); its exit status."""
    _prctl(PR_SET_CHILD_SUBREAPER, 1)
    child = subprocess.Popen(command)
    signal.signal(signal.SIGTERM, lambda signum, _: child.returncode is None and child.send_signal(signum))
    status, deadline = None, None
    while True:
        try:
            if deadline is None:
                pid, wait_status = os.waitpid(-1, 0)
            else:
                pid, wait_status = os.waitpid(-1, os.WNOHANG)
                if pid == 0:
                    if time.monotonic() > deadline:
                        break
                    time.sleep(0.1)
                    continue
        except ChildProcessError:  # nothing left to wait for
            break
        except KeyboardInterrupt:  # Ctrl-C reaches the command too (same process group): go on reaping
            continue
        if pid == child.pid:
            status, deadline = os.waitstatus_to_exitcode(wait_status), time.monotonic() + linger
            child.returncode = status
    left = sorted(int(p) for p in os.listdir("/proc") if p.isdigit() and _parent(int(p)) == os.getpid())
    if left:
        print(f"reap: {len(left)} process(es) still running {linger:.0f} s after {Path(command[0]).name} "
              f"ended, not counted: " + ", ".join(f"{p} ({_name(p)})" for p in left), file=sys.stderr)
    assert status is not None
    return status if status >= 0 else 128 - status


def _parent(pid: int) -> int:
    """The parent of pid (0 when it has gone)."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return 0


def _name(pid: int) -> str:
    """The command name of pid ('?' when it has gone)."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"


def main(argv: list[str]) -> int:
    """Parse [--linger SECONDS] COMMAND... and reap."""
    linger = LINGER
    if argv[:1] == ["--linger"]:
        linger, argv = float(argv[1]), argv[2:]
    if not argv:
        print("usage: python scripts/reap.py [--linger SECONDS] COMMAND...", file=sys.stderr)
        return 2
    return reap(argv, linger)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

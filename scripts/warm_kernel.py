"""A Jupyter kernel for the test suite's notebooks, forked warm (TensorFlow imported) by a shared zygote.

`run_tests.py` starts one zygote for the chapters and solutions stages (autograder/sandbox.ZygoteServer,
in the tests' own environment, Matplotlib's inline backend as ipykernel sets it) and a kernelspec
`dcv-warm` whose command is this script; nbval runs every notebook with it (`--nbval-kernel-name`).
This process asks the zygote at $DCV_WARM_KERNEL_SOCKET for a kernel: unconfined (this user, this
environment, this folder), IPython's kernel on `connection_file`. Then it stands for the kernel, as
jupyter_client expects of a kernel's process: signals sent to it go to the kernel, and it exits when
the kernel does, with its status; killed (as nbval stops its kernels), its zygote kills the kernel.
The zygote logs each kernel's start and CPU seconds in the file $DCV_WARM_KERNEL_CPU, for the stage's table. A
notebook starts in about half a second instead of importing TensorFlow again (~6 CPU-s each, twenty
notebooks).

    python scripts/warm_kernel.py CONNECTION_FILE
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import time


def main(connection_file: str) -> int:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    sock.connect(os.environ["DCV_WARM_KERNEL_SOCKET"])
    sock.recv(1 << 16)  # what the zygote imported
    spec = {"isolate": False, "workdir": os.getcwd(), "env": dict(os.environ), "argv": ["-f", connection_file],
            "import_from_workdir": True,  # as a kernel that Jupyter starts
            "cpu_log": os.environ.get("DCV_WARM_KERNEL_CPU")}  # its CPU seconds, for the stage's table

    def ask(message: dict, fds: list[int] = ()) -> dict:
        socket.send_fds(sock, [json.dumps(message).encode()], list(fds))
        return json.loads(sock.recv(1 << 16))

    pid = ask({"op": "spawn", "spec": spec}, [sys.stderr.fileno()])["pid"]
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGQUIT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(signum, lambda number, frame: os.kill(pid, number))
    while True:
        status = ask({"op": "poll", "pid": pid})["status"]
        if status is not None:
            return status
        time.sleep(0.2)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))

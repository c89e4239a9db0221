"""Peak memory of a command's process tree: `python -m tests.peak_rss CMD ARG...` runs CMD and prints one line
`RESULT {json}` with its exit code and stderr, and in MiB: `largest_peak_mib`, the largest peak RSS of any
process of the tree (getrusage of this harness's waited-for descendants), `tree_mib`, the tree's total RSS
sampled every 10 ms, and `descendants_peak_mib`, the largest peak RSS (VmHWM, sampled) of CMD's descendants.

A child forked but not yet exec'd still runs in its parent's memory (its RSS and VmHWM are the parent's, and
getrusage keeps that peak), so the samples skip a descendant whose command line is still its parent's."""

from __future__ import annotations

import json
import re
import resource
import subprocess
import sys
import threading
import time

import psutil


def high_water_mark(pid: int) -> int:
    """A process's peak resident bytes so far (Linux's VmHWM); 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            found = re.search(r"^VmHWM:\s+(\d+) kB", status.read(), re.MULTILINE)
    except OSError:
        return 0
    return int(found.group(1)) * 1024 if found else 0


def exec_descendants(root: psutil.Process) -> list[psutil.Process]:
    """`root`'s descendants that run a program of their own (see above)."""
    command, found = root.cmdline(), []
    for child in root.children(recursive=True):
        try:
            if child.cmdline() != command:
                found.append(child)
        except psutil.Error:
            continue
    return found


def sample(root: psutil.Process, peaks: dict[str, int]) -> None:
    """Fold the tree's current total RSS and its descendants' peaks into `peaks`."""
    members = [root, *exec_descendants(root)]
    total = 0
    for member in members:
        try:
            total += member.memory_info().rss
        except psutil.Error:
            continue
    peaks["tree"] = max(peaks["tree"], total)
    peaks["descendants"] = max([peaks["descendants"], *(high_water_mark(member.pid) for member in members[1:])])


def main(command: list[str]) -> int:
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    watched, peaks, running = psutil.Process(child.pid), {"tree": 0, "descendants": 0}, [True]

    def watch() -> None:
        while running[0]:
            try:
                sample(watched, peaks)
            except psutil.Error:
                return
            time.sleep(0.01)

    sampler = threading.Thread(target=watch)
    sampler.start()
    _, stderr = child.communicate()
    running[0] = False
    sampler.join()
    largest = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024  # Linux: KiB
    print("RESULT " + json.dumps({"code": child.returncode, "stderr": stderr, "largest_peak_mib": largest / 2**20,
                                  "tree_mib": peaks["tree"] / 2**20,
                                  "descendants_peak_mib": peaks["descendants"] / 2**20}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

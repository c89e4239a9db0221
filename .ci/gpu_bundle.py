"""Pack what a lent GPU machine lacks for `python -m aosa.jobs.gpu_check` into one archive a device call can carry.

The device image has torch (2.11, Python 3.12, Triton), numpy, pyarrow, OpenCV and Pillow but no network, and a
call carries at most 64 MiB. So the pure-Python and cp312 wheels of Ray (less its Java jars and the libraries the
engine never imports), DuckDB, Captum and jsonschema are unpacked here, trimmed and packed as `.gpu/site.tar.xz`
(ignored by git; pass `carry=[".gpu"]`). DALI, TensorRT and PyAV do not fit; gpu_check skips their rows.

    python .ci/gpu_bundle.py          # builds .gpu/site.tar.xz and prints the device command
"""

from __future__ import annotations

import importlib.metadata
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / ".gpu"  # what a call carries: the archive alone
WORK = ROOT / "build" / "gpu"  # the wheels and the unpacked site they come from (ignored by git, not carried)
LIMIT = 60 * 2 ** 20  # under the 64 MiB a device call carries, with room for the work tree's own files
# Installed versions here pin Ray and jsonschema's stack (what the tests ran with); DuckDB and Captum take the
# newest cp312 wheel, since the local mirror may hold a newer one than PyPI serves for 3.12.
PINNED = ("ray", "jsonschema", "jsonschema-specifications", "referencing", "rpds-py", "attrs", "msgpack",
          "protobuf", "click")
UNPINNED = ("duckdb", "captum")
UNUSED = ("ray/jars", "ray/rllib", "ray/tune", "ray/train", "ray/serve", "ray/data", "ray/llm", "ray/air",
          "ray/dashboard/client", "ray/util/collective", "ray/experimental/sandbox")
DEVICE_COMMAND = ("tar xJf .gpu/site.tar.xz -C /tmp && mkdir -p /tmp/ns && ln -sfn \"$PWD\" /tmp/ns/aosa && "
                  "PYTHONPATH=/tmp/ns:/tmp/site python -m aosa.jobs.gpu_check")


def wheels() -> list[Path]:
    """The cp312 manylinux wheels, without dependencies (the list above is the closure the device lacks)."""
    folder = WORK / "wheels"
    folder.mkdir(parents=True, exist_ok=True)
    wanted = [f"{name}=={importlib.metadata.version(name)}" for name in PINNED] + list(UNPINNED)
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                    "--python-version", "3.12", "--platform", "manylinux2014_x86_64", "--platform",
                    "manylinux_2_28_x86_64", "--dest", str(folder), *wanted], check=True)
    return sorted(folder.glob("*.whl"))


def unpack(found: list[Path], site: Path) -> None:
    """Each wheel unpacked into `site`, then the parts of Ray nothing here imports removed."""
    shutil.rmtree(site, ignore_errors=True)
    for wheel in found:
        with zipfile.ZipFile(wheel) as archive:
            for member in archive.infolist():
                path = Path(archive.extract(member, site))
                if member.external_attr >> 16:  # extract drops modes: Ray's raylet and GCS server must stay executable
                    path.chmod((member.external_attr >> 16) & 0o777)
    for part in UNUSED:
        shutil.rmtree(site / part, ignore_errors=True)


def main() -> int:
    site = WORK / "site"
    unpack(wheels(), site)
    OUT.mkdir(exist_ok=True)
    archive = OUT / "site.tar.xz"
    with tarfile.open(archive, "w:xz", preset=9) as tar:
        tar.add(site, arcname="site")
    size = archive.stat().st_size
    print(f"{archive}: {size / 2 ** 20:.1f} MiB")
    if size > LIMIT:
        print(f"over {LIMIT / 2 ** 20:.0f} MiB: a device call would not carry it", file=sys.stderr)
        return 1
    print(f"run (carry .gpu): {DEVICE_COMMAND}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

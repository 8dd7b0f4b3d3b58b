"""Update a directory the way the kubelet updates a mounted ConfigMap or Secret.

The kubelet's AtomicWriter (pkg/volume/util/atomic_writer.go) writes every file of the new version
into a fresh ``..<timestamp>`` directory, points a temporary symlink at it, renames that symlink
over ``..data`` (the atomic step), creates ``name -> ..data/name`` links for new names, removes
links for names that are gone and finally deletes the previous version's directory.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

DATA = "..data"


def publish(directory: Path, files: dict[str, bytes]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    data = directory / DATA
    previous = os.readlink(data) if data.is_symlink() else None
    generation = directory / f"..{time.strftime('%Y_%m_%d_%H_%M_%S')}.{time.time_ns()}"
    generation.mkdir()
    for name, content in files.items():
        (generation / name).write_bytes(content)
    staged = directory / "..data_tmp"
    staged.unlink(missing_ok=True)
    os.symlink(generation.name, staged)
    os.replace(staged, data)
    for name in files:
        link = directory / name
        if not link.is_symlink():
            os.symlink(f"{DATA}/{name}", link)
    for entry in directory.iterdir():
        if entry.is_symlink() and not entry.name.startswith("..") and entry.name not in files:
            entry.unlink()
    if previous is not None:
        shutil.rmtree(directory / previous)


def contents(directory: Path, *names: str) -> dict[str, bytes]:
    return {name: (directory / name).read_bytes() for name in names}

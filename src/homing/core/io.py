"""Atomic writes: every output goes to a hidden temporary file beside its final name and is
renamed onto it (``os.replace``, atomic on one file system) only once complete, so a crash
or a killed job never leaves a complete-looking partial file, and Snakemake's re-run sees
the output as missing."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import nibabel as nib
    import pandas as pd


@contextlib.contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to (its name ends in ``path``'s name, so
    suffixes such as .nii.gz still choose the format); renamed onto ``path`` when the block
    ends without error, removed when it raises. Creates the parent folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{uuid.uuid4().hex[:8]}-{path.name}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def atomic_dir(path: Path | str) -> Iterator[Path]:
    """A temporary folder beside ``path`` to fill; when the block ends without error it
    takes the place of ``path`` (an existing folder there is moved aside first and removed
    after), and when it raises it is removed and any old ``path`` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{uuid.uuid4().hex[:8]}-{path.name}")
    tmp.mkdir()
    old: Path | None = None
    try:
        yield tmp
        if path.exists():
            old = path.with_name(f".old-{uuid.uuid4().hex[:8]}-{path.name}")
            os.replace(path, old)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and not path.exists():
            os.replace(old, path)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def copy_file(src: Path | str, path: Path | str) -> None:
    """Copy a file (e.g. one a tool wrote in a temporary folder) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        shutil.copyfile(src, tmp)


def write_text(text: str, path: Path | str) -> None:
    """Write text (UTF-8) atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(obj: dict, path: Path | str, sort_keys: bool = True) -> None:
    """Write a JSON object atomically (indented, keys sorted unless told otherwise)."""
    write_text(json.dumps(obj, indent=2, sort_keys=sort_keys) + "\n", path)


def write_tsv(df: pd.DataFrame, path: Path | str) -> None:
    """Write a table as TSV atomically (floats to 6 significant digits)."""
    with atomic_path(path) as tmp:
        df.to_csv(tmp, sep="\t", index=False, float_format="%.6g")


def write_nifti(img: nib.Nifti1Image, path: Path | str) -> None:
    """Write a NIfTI atomically, with qform = sform = its affine (code 1, scanner)."""
    import nibabel as nib

    img.set_qform(img.affine, code=1)
    img.set_sform(img.affine, code=1)
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))

"""The Digimouse whole-body mouse atlas: fetch with checksum, decode, and build a CT-like template.

Digimouse (Dogdas et al. 2007, Stout et al. 2002) ships as organ labels only, from the MCX
project as JData JSON: a zlib-compressed, base64-encoded uint8 array, 0.2 mm isotropic.
Orientation of the source array (checked from organ centroids): +i → animal left,
+j → caudal, +k → dorsal. Homing stores the atlas re-ordered to RAS+ (i → right, j →
anterior/ventral... see :func:`source_affine`) so every later stage sees ordinary geometry.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import nibabel as nib
import numpy as np
from scipy import ndimage

from homing import HomingError
from homing.core import io

# pandas is imported where a table is made: jobs that only write images (pet_to_ct) are
# spared its import (≈ 0.3 s of CPU).
if TYPE_CHECKING:
    import pandas as pd

ATLAS_VOXEL_MM = 0.2


@dataclass(frozen=True)
class Organ:
    """One atlas label: integer value, snake_case name, typical CT number (HU)."""

    label: int
    name: str
    description: str
    ct_hu: float
    tissue_class: str  # air, soft, bone, lung, fluid


# CT numbers are typical micro-CT values for the tissue class; the template only needs
# the contrasts that drive registration (air/body, lung, bone) to be right.
ORGANS: tuple[Organ, ...] = (
    Organ(0, "background", "background (air)", -1000.0, "air"),
    Organ(1, "soft_tissue", "skin and remaining soft tissue", 40.0, "soft"),
    Organ(2, "skeleton", "skeleton", 1100.0, "bone"),
    Organ(3, "eyes", "eyes", 15.0, "fluid"),
    Organ(4, "medulla", "medulla", 35.0, "soft"),
    Organ(5, "cerebellum", "cerebellum", 35.0, "soft"),
    Organ(6, "olfactory_bulbs", "olfactory bulbs", 35.0, "soft"),
    Organ(7, "external_cerebrum", "external cerebrum", 35.0, "soft"),
    Organ(8, "striatum", "striatum", 35.0, "soft"),
    Organ(9, "heart", "heart (with blood pool)", 45.0, "soft"),
    Organ(10, "brain_rest", "rest of the brain", 35.0, "soft"),
    Organ(11, "masseter_muscles", "masseter muscles", 50.0, "soft"),
    Organ(12, "lachrymal_glands", "lachrymal glands", 40.0, "soft"),
    Organ(13, "bladder", "bladder", 10.0, "fluid"),
    Organ(14, "testis", "testis", 35.0, "soft"),
    Organ(15, "stomach", "stomach", 20.0, "soft"),
    Organ(16, "spleen", "spleen", 55.0, "soft"),
    Organ(17, "pancreas", "pancreas", 40.0, "soft"),
    Organ(18, "liver", "liver", 60.0, "soft"),
    Organ(19, "kidneys", "kidneys", 35.0, "soft"),
    Organ(20, "adrenal_glands", "adrenal glands", 40.0, "soft"),
    Organ(21, "lungs", "lungs", -450.0, "lung"),
)
ORGAN_BY_NAME = {o.name: o for o in ORGANS}
ORGAN_BY_LABEL = {o.label: o for o in ORGANS}


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fetch_source(url: str, sha256: str, dest: Path, local_path: str | None = None) -> Path:
    """Place the atlas source file at ``dest``, from ``local_path`` if given, else ``url``.

    Either way the bytes must match ``sha256``; a mismatch is an error naming both digests,
    and nothing is left at ``dest``.
    """
    dest = Path(dest)
    with io.atomic_path(dest) as tmp:  # a file that fails its checksum never lands at dest
        if local_path:
            src = Path(local_path)
            if not src.is_file():
                raise HomingError(
                    f"config atlas.local_path: {src} does not exist; fix the path or leave it "
                    "empty to download from atlas.url"
                )
            shutil.copyfile(src, tmp)
            origin = str(src)
        else:
            try:
                with urllib.request.urlopen(url, timeout=120) as resp, open(tmp, "wb") as out:
                    shutil.copyfileobj(resp, out)
            except OSError as exc:
                raise HomingError(
                    f"could not download the atlas from {url}: {exc}. Without network, set "
                    "atlas.local_path in the config to a local copy of digimouse.json"
                ) from exc
            origin = url
        digest = sha256_of(tmp)
        if digest != sha256:
            raise HomingError(
                f"atlas source {origin}: sha256 {digest} does not match the expected "
                f"{sha256} (config atlas.sha256); the file is not the pinned Digimouse release. "
                "Point atlas.local_path at an unmodified copy of digimouse.json, or set it to "
                '"" to download the pinned release'
            )
    return dest


def decode_digimouse_json(path: Path) -> np.ndarray:
    """Decode the MCX JData ``Shapes`` array of digimouse.json to uint8 labels (source order)."""
    text = Path(path).read_text(encoding="utf-8", errors="strict")
    doc = json.loads(text, strict=False)  # the file holds raw control characters
    try:
        shapes = doc["Shapes"]
        size = tuple(int(n) for n in shapes["_ArraySize_"])
        if shapes.get("_ArrayZipType_", "zlib") != "zlib":
            raise HomingError(f"{path}: Shapes._ArrayZipType_ must be zlib")
        raw = zlib.decompress(base64.b64decode(shapes["_ArrayZipData_"]))
    except KeyError as exc:
        raise HomingError(f"{path}: not an MCX digimouse JData file (missing {exc})") from exc
    arr = np.frombuffer(raw, dtype=np.uint8)
    if arr.size != int(np.prod(size)):
        raise HomingError(f"{path}: decoded {arr.size} voxels, expected {size}")
    order = "F" if shapes.get("_ArrayOrder_", "r").lower().startswith("c") else "C"
    return arr.reshape(size, order=order).copy()


def source_affine(shape: tuple[int, int, int], voxel_mm: float = ATLAS_VOXEL_MM) -> np.ndarray:
    """RAS affine of the source array: +i → left, +j → inferior (caudal), +k → posterior (dorsal).

    The origin puts the array's centre at (0, 0, 0) mm.
    """
    aff = np.zeros((4, 4))
    aff[0, 0] = -voxel_mm  # i → left = −x
    aff[2, 1] = -voxel_mm  # j → caudal = −z
    aff[1, 2] = -voxel_mm  # k → dorsal = −y
    aff[3, 3] = 1.0
    centre = (np.asarray(shape) - 1) / 2.0
    aff[:3, 3] = -aff[:3, :3] @ centre
    return aff


def canonical_labels(source: np.ndarray, voxel_mm: float = ATLAS_VOXEL_MM) -> nib.Nifti1Image:
    """The labels as a RAS+-ordered NIfTI (i → right, j → anterior, k → superior)."""
    img = nib.Nifti1Image(source.astype(np.uint8), source_affine(source.shape, voxel_mm))
    canon = nib.as_closest_canonical(img)
    return nib.Nifti1Image(np.asarray(canon.dataobj, dtype=np.uint8), canon.affine)


def template_from_labels(labels: np.ndarray, smoothing_mm: float = 0.2) -> np.ndarray:
    """A CT-like template (HU, float32) from organ labels: tissue-class CT numbers, lightly
    smoothed (Gaussian sigma ``smoothing_mm`` at 0.2 mm voxels) so edges look like a scan."""
    lut = np.full(256, -1000.0, dtype=np.float32)
    for organ in ORGANS:
        lut[organ.label] = organ.ct_hu
    hu = lut[labels]
    if smoothing_mm > 0:
        hu = ndimage.gaussian_filter(hu, sigma=smoothing_mm / ATLAS_VOXEL_MM)
    return hu.astype(np.float32)


def label_table(labels: np.ndarray, voxel_mm: float) -> pd.DataFrame:
    """Label table (TSV-ready): label, name, description, tissue class, volume in mL."""
    import pandas as pd

    counts = np.bincount(labels.ravel(), minlength=len(ORGANS))
    voxel_ml = voxel_mm**3 / 1000.0
    return pd.DataFrame(
        {
            "label": [o.label for o in ORGANS],
            "name": [o.name for o in ORGANS],
            "description": [o.description for o in ORGANS],
            "tissue_class": [o.tissue_class for o in ORGANS],
            "atlas_volume_ml": [round(float(counts[o.label]) * voxel_ml, 6) for o in ORGANS],
        }
    )


def build_atlas(source_json: Path, out_dir: Path) -> dict[str, Path]:
    """Write ``template.nii.gz`` (HU), ``labels.nii.gz`` (uint8) and ``labels.tsv`` to out_dir."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    labels_img = canonical_labels(decode_digimouse_json(source_json))
    labels = np.asarray(labels_img.dataobj)
    template = template_from_labels(labels)
    paths = {
        "template": out_dir / "template.nii.gz",
        "labels": out_dir / "labels.nii.gz",
        "table": out_dir / "labels.tsv",
    }
    io.write_nifti(nib.Nifti1Image(template, labels_img.affine), paths["template"])
    io.write_nifti(labels_img, paths["labels"])
    io.write_tsv(label_table(labels, ATLAS_VOXEL_MM), paths["table"])
    return paths

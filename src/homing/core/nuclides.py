"""Radionuclide table: half-lives in seconds, keyed by canonical name ("89Zr").

Half-lives follow ../shared/docs/DOMAIN.md §2. There is no default half-life anywhere in
Homing: an unknown nuclide is an error that says which names are known.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from homing import HomingError


@dataclass(frozen=True)
class Nuclide:
    """A radionuclide: canonical name, half-life in s, DICOM code values (CID 4020/18)."""

    name: str
    half_life_s: float
    element: str
    mass_number: int
    metastable: bool = False
    dicom_codes: tuple[str, ...] = ()


_MIN = 60.0
_H = 3600.0
_D = 86400.0

NUCLIDES: dict[str, Nuclide] = {
    n.name: n
    for n in (
        Nuclide("18F", 109.77 * _MIN, "F", 18, dicom_codes=("C-111A1", "77004003")),
        Nuclide("68Ga", 67.71 * _MIN, "Ga", 68, dicom_codes=("C-131A3", "35337001")),
        Nuclide("64Cu", 12.701 * _H, "Cu", 64, dicom_codes=("C-127A2", "3932008")),
        Nuclide("86Y", 14.74 * _H, "Y", 86, dicom_codes=("C-162A3", "10738001")),
        Nuclide("124I", 4.176 * _D, "I", 124, dicom_codes=("C-114A5", "40937006")),
        Nuclide("89Zr", 78.41 * _H, "Zr", 89, dicom_codes=("C-168A4", "63360001")),
        Nuclide("111In", 67.31 * _H, "In", 111),
        Nuclide("99mTc", 6.0072 * _H, "Tc", 99, metastable=True),
        Nuclide("123I", 13.22 * _H, "I", 123),
        Nuclide("177Lu", 6.647 * _D, "Lu", 177),
    )
}

_ELEMENT_NAMES = {
    "fluorine": "F",
    "gallium": "Ga",
    "copper": "Cu",
    "yttrium": "Y",
    "iodine": "I",
    "zirconium": "Zr",
    "indium": "In",
    "technetium": "Tc",
    "lutetium": "Lu",
}


def _canonical(mass: str, meta: str, element: str) -> str | None:
    element = element.strip()
    symbol = _ELEMENT_NAMES.get(element.lower(), element.capitalize())
    name = f"{int(mass)}{'m' if meta else ''}{symbol}"
    return name if name in NUCLIDES else None


def nuclide_named(text: str, *, source: str = "nuclide") -> Nuclide:
    """Return the Nuclide for a name or DICOM code such as '89Zr', 'Zr-89', 'Zr89',
    '^89^Zirconium', 'Zirconium-89', '99mTc', 'Tc-99m' or 'C-168A4'.

    ``source`` names where the text came from, for the error message.
    """
    raw = str(text).strip()
    if not raw:
        raise HomingError(f"{source}: radionuclide is empty; give one of {sorted(NUCLIDES)}")
    for nuc in NUCLIDES.values():
        if raw in nuc.dicom_codes:
            return nuc
    cleaned = raw.replace("^", " ").replace("-", " ").replace("_", " ").strip()
    patterns = (
        r"^(\d+)\s*(m?)\s*([A-Za-z]+)$",  # 89Zr, 99mTc, 89 Zirconium
        r"^([A-Za-z]+)\s*(\d+)\s*(m?)$",  # Zr89, Zr 89, Tc99m, Zirconium 89
    )
    for i, pat in enumerate(patterns):
        m = re.match(pat, cleaned)
        if not m:
            continue
        if i == 0:
            mass, meta, element = m.groups()
        else:
            element, mass, meta = m.groups()
        name = _canonical(mass, meta, element)
        if name:
            return NUCLIDES[name]
    raise HomingError(
        f"{source}: unknown radionuclide {raw!r}. Known: {', '.join(sorted(NUCLIDES))}. "
        "Homing never assumes a half-life: write one of these names in the sheet."
    )

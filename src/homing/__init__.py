"""Homing: quantitative tracking of therapeutic cells in longitudinal mouse PET/SPECT studies.

The package holds all science and I/O; the Snakemake workflow only wires it together.
"""

__version__ = "0.1.0"

from homing.core.errors import HomingError  # noqa: E402  (after __version__, which it may need)

__all__ = ["HomingError", "__version__"]

"""Put this checkout's ``src/`` first on sys.path, so every rule's script imports the homing
package of the workflow it belongs to, also inside a conda env that holds only dependencies."""

import sys
from pathlib import Path

_src = Path(__file__).resolve().parents[2] / "src"
if _src.is_dir() and str(_src) not in sys.path:
    sys.path.insert(0, str(_src))

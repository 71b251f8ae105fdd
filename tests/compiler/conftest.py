"""The compiler tests share helpers in compiler_cases.py; importlib mode keeps test folders off
sys.path, so this folder is put there for them."""

import sys
from pathlib import Path

_HERE = str(Path(__file__).parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

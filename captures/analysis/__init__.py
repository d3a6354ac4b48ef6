"""kviz's networking knowledge, in pure Python: captures in, an explained sequence out.

No Django, no pyshark, no kubernetes here: plain data in, plain data out. The per-packet path
may run compiled (build.py says when); BUILD says which build this process runs.
"""

from . import build

BUILD = build.activate(__path__)

# Imported after activate(), which decides where they come from.
from .engine import CaptureFile, analyze_files  # noqa: E402
from .model import SCHEMA, SequenceModel  # noqa: E402
from .records import CaptureError  # noqa: E402

__all__ = ["BUILD", "SCHEMA", "CaptureError", "CaptureFile", "SequenceModel", "analyze_files"]

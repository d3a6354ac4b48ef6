"""kviz's networking knowledge, in pure Python: captures in, an explained sequence out.

No Django, no pyshark, no kubernetes here: plain data in, plain data out.
"""

from .engine import CaptureFile, analyze_files
from .model import SCHEMA, SequenceModel
from .records import CaptureError

__all__ = ["SCHEMA", "CaptureError", "CaptureFile", "SequenceModel", "analyze_files"]

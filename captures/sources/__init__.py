"""Where packets come from: one module per source (upload, local, lab, kubernetes).

Importing the package registers every source's kinds with captures.sources.base, whose
resolve_target, open_live and list_targets look them up; the order below is the picker's.
"""

from captures.sources import local

try:
    from captures.sources import lab
except ImportError:  # a build without the lab package (captures/lab) offers no lab targets
    lab = None
from captures.sources import kubernetes, path, upload

__all__ = ["kubernetes", "lab", "local", "path", "upload"]

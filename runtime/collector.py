"""The objects a process held before a compile, left out of the collector's scans meanwhile.

A compile builds and drops tens of thousands of small IR objects (nodes, values, attributes
of graphs the passes rewrite), so Python's cyclic collector runs dozens of times, and each full
collection rescans every object the process already held: the modules of onnx, onnxscript,
numpy and the engines. On the three benchmark models that was 60-80 ms of a 0.25-0.5 s compile.
``older_objects_frozen`` moves those objects to the permanent generation (``gc.freeze``) for
the compile, so the collector, still running as usual, scans only what the compile made
(5-30 ms), then puts them back.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def older_objects_frozen() -> Iterator[None]:
    """Every object tracked when the ``with`` body starts is left out of collections until it
    ends. A caller that froze objects itself (``gc.freeze`` before forking workers) keeps its
    freeze: nothing is frozen or unfrozen here then."""
    if gc.get_freeze_count():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()

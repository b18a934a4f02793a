"""Host bytes made safe to print: control characters shown as escapes, never sent to a terminal or a log.

A managed file's content, a host's stderr or a symlink's target may carry ESC sequences (clipboard writes,
cursor moves that hide diff lines). Used wherever such text is shown: plan diffs, command errors.
"""

from __future__ import annotations

_ESCAPES = {c: f"\\x{c:02x}" for c in [*range(32), 127] if c not in (9, 10)}  # tab and newline stay


def printable(text: str) -> str:
    """`text` with every control character but tab and newline written as `\\xNN`."""
    return text.translate(_ESCAPES)

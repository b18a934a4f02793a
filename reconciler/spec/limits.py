"""The bounds on reading and rendering specs: every input, however hostile, costs at most this much.

One named limit per resource, each reported as a located spec error when exceeded (README, "Limits").
Read by `spec.load` (files, YAML) and `spec.sandbox` (templates). Plain constants, no logic.
"""

from __future__ import annotations

# Spec files
MAX_SPEC_FILE_BYTES = 4 * 1024 * 1024  # one *.yaml file
MAX_SPEC_BYTES = 16 * 1024 * 1024  # every file of the directory together
MAX_SPEC_FILES = 1000  # *.yaml / *.yml files in the directory
# YAML, after aliases are expanded: an alias bomb of a few hundred bytes would otherwise become gigabytes
MAX_YAML_NODES = 100_000  # values (scalars, lists, maps) in the whole directory
MAX_YAML_DEPTH = 64  # lists and maps nested in one document
MAX_NUMBER_CHARS = 100  # characters of one YAML number (YAML 1.1 base-60 ints are built in quadratic time)

# Templates, per document and host
MAX_TEMPLATE_STEPS = 1_000_000  # loop iterations + calls + operators in one rendering
MAX_TEMPLATE_DEPTH = 100  # nested calls (macros calling macros, recursive loops)
MAX_RENDER_SECONDS = 1.0  # wall time of one rendering
MAX_RENDERED_BYTES = 16 * 1024 * 1024  # one rendering's output, and any string or list built on the way
MAX_RENDERED_TOTAL_BYTES = 64 * 1024 * 1024  # every rendering of one load together
MAX_RENDER_TOTAL_SECONDS = 30.0  # wall time of every rendering of one load together (half the unit's WatchdogSec)
MAX_TEMPLATE_ITEMS = 1_000_000  # elements of a list, tuple or dict built in a template
MAX_TEMPLATE_INT_BITS = 65_536  # bits of a number computed in a template (10**19728)

# Linux and systemd
PATH_MAX = 4096  # bytes of a path including its terminating NUL (linux/limits.h)
NAME_MAX = 255  # bytes of one path component
UNIT_NAME_MAX = 255  # characters of a unit name with its suffix (systemd's UNIT_NAME_MAX is 256 with the NUL)

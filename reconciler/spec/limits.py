"""The bounds on reading and rendering specs: every input, however hostile, costs at most this much.

One named limit per resource, each reported as a located spec error when exceeded (docs/specs.md, "Limits").
Read by `spec.load` (files, YAML), `spec.sandbox` (templates) and `spec.isolate` (the whole load, in a child
process). Constants, and the exception the load's CPU budget raises.
"""

from __future__ import annotations

# Spec files
MAX_SPEC_FILE_BYTES = 4 * 1024 * 1024  # one *.yaml file
MAX_SPEC_BYTES = 16 * 1024 * 1024  # every file of the directory together
MAX_SPEC_FILES = 1000  # *.yaml / *.yml files in the directory
MAX_SPEC_DIR_ENTRIES = 10_000  # files and directories of any kind under the directory (each one is looked at)
# YAML, after aliases are expanded: an alias bomb of a few hundred bytes would otherwise become gigabytes
MAX_YAML_NODES = 100_000  # values (scalars, lists, maps) in the whole directory
MAX_YAML_DEPTH = 64  # lists and maps nested in one document
MAX_NUMBER_CHARS = 100  # characters of one YAML number (YAML 1.1 base-60 ints are built in quadratic time)

# Templates, per document and host
MAX_TEMPLATE_STEPS = 1_000_000  # loop iterations + calls + operators in one rendering
MAX_TEMPLATE_DEPTH = 100  # nested calls (macros calling macros, recursive loops)
MAX_RENDER_SECONDS = 1.0  # CPU time of one rendering
MAX_RENDERED_BYTES = 16 * 1024 * 1024  # one rendering's output, and any string or list built on the way
MAX_RENDERED_TOTAL_BYTES = 64 * 1024 * 1024  # every rendering of one load together
MAX_TEMPLATE_ITEMS = 1_000_000  # elements of a list, tuple or dict built in a template
MAX_TEMPLATE_INT_BITS = 65_536  # bits of a number computed in a template (10**19728)

# The desired state: hosts x what each document selects (a product of legal sizes: 3000 Hosts x 3000 Files)
MAX_HOSTS = 1000  # Host documents
MAX_DESIRED_ITEMS = 100_000  # hosts x (File, Unit and HealthCheck documents, certificate paths), selected or not

# The whole load, in a child process: what holds when a bound above misses something. The budgets are CPU time
# (a busy machine slows a load without failing it). Reading gets a fixed one (its work is bounded by the YAML
# limits: 100k values take ~2 s); rendering and checking get theirs from then on, growing with the number of
# Host documents, as the memory does: a 1000-host fleet is legitimately more work (~2.5 s and ~45 MB at 1000
# hosts on a 2-core machine; 6 s and 192 MB allowed).
MAX_READ_SECONDS = 3.0  # CPU time to list, read and parse the spec files
MAX_LOAD_SECONDS = 1.0  # CPU time to render and check, after reading ...
MAX_LOAD_SECONDS_PER_HOST = 0.005  # ... plus this per host
MAX_LOAD_MEMORY_BYTES = 128 * 1024 * 1024  # memory the child may map beyond what it inherits ...
MAX_LOAD_MEMORY_PER_HOST = 64 * 1024  # ... plus this per host
MAX_TEMPLATE_TAGS = 10_000  # {{ }} and {% %} in one template (compiling costs ~40 us each)

# Linux and systemd
PATH_MAX = 4096  # bytes of a path including its terminating NUL (linux/limits.h)
NAME_MAX = 255  # bytes of one path component
UNIT_NAME_MAX = 255  # characters of a unit name with its suffix (systemd's UNIT_NAME_MAX is 256 with the NUL)


def load_budget(hosts: int) -> tuple[float, int]:
    """Seconds to render and check, and bytes of memory for the whole load, for this many hosts."""
    return (
        MAX_LOAD_SECONDS + hosts * MAX_LOAD_SECONDS_PER_HOST,
        MAX_LOAD_MEMORY_BYTES + hosts * MAX_LOAD_MEMORY_PER_HOST,
    )


class LoadExpired(BaseException):
    """The load went past its CPU budget (raised by the child's SIGPROF wherever it was). Not an `Exception`, so
    no handler on the way takes it for a template's own error; the ones that know where they are set `at`."""

    def __init__(self, message: str):
        super().__init__(message)
        self.at: tuple[str, int, str] | None = None  # file, line, field

    def locate(self, file: str, line: int, field: str, context: str = "") -> None:
        """Where it happened (the innermost handler to know it wins)."""
        if self.at is None:
            self.at = (file, line, field)
            self.args = (context + str(self),)

"""Jinja2 rendering with a bounded cost: however hostile a template, one rendering stops within its limits.

Owns `BoundedEnvironment`, Jinja's sandbox (no attribute or callable that escapes to Python) plus a budget
per rendering: steps (every loop iteration, call, filter and guarded operator), call depth, wall time
(checked at every step), and the size of every string or list built on the way. Operations that could
allocate far more than their inputs in one go (`'x' * 10**9`, `10 ** 10**9`, `center(10**9)`, `'%9999999d'`,
`replace`, `join`, `indent`, `translate`, `batch`, `slice`, `sum`) are estimated before they run. Limits
live in `spec.limits`. Used by `spec.render`; nothing here knows about documents or hosts.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Iterator, Sized
from itertools import islice
from typing import Any

import jinja2
from jinja2 import meta, nodes
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment

from reconciler.spec.limits import (
    MAX_RENDER_SECONDS,
    MAX_RENDERED_BYTES,
    MAX_TEMPLATE_DEPTH,
    MAX_TEMPLATE_INT_BITS,
    MAX_TEMPLATE_ITEMS,
    MAX_TEMPLATE_STEPS,
    MAX_TEMPLATE_TAGS,
)


class RenderLimitError(Exception):
    """A rendering went past one of the limits; the message names it."""


# A width, precision or count written into a format string ("%99999999d", "{:>99999999}").
_FORMAT_NUMBER = re.compile(r"\d{%d,}" % len(str(MAX_RENDERED_BYTES)))
_ITERATE = "_reconciler_iterate"
# The values a spec can hand a template (YAML's scalars, lists, maps) and methods of theirs that build nothing
# larger than their input: calls to these skip the estimate (a loop over 1000 hosts calling h.labels.get for
# each of 1000 hosts is 1M calls in a load).
_PLAIN_TYPES = frozenset({dict, list, tuple, str, int, float, bool, type(None)})
_CHEAP_METHODS = frozenset(
    {
        "get",
        "keys",
        "values",
        "items",
        "startswith",
        "endswith",
        "count",
        "index",
        "find",
        "rfind",
        "isdigit",
        "isalpha",
        "isalnum",
        "isspace",
        "islower",
        "isupper",
        "strip",
        "lstrip",
        "rstrip",
        "removeprefix",
        "removesuffix",
    }
)
_BUILTIN_METHOD = type("".join)
_DICT_ATTRIBUTES = frozenset(dir(dict))
_CHECK = "_reconciler_check"


def _too_big(what: str, size: int, limit: int, name: str) -> RenderLimitError:
    return RenderLimitError(f"{what} of {size} exceeds {limit} (limit {name})")


def _limit_size(value: Any) -> Any:
    """`value` itself, if it is not larger than a template may build."""
    if isinstance(value, (str, bytes)) and len(value) > MAX_RENDERED_BYTES:
        raise _too_big("a string", len(value), MAX_RENDERED_BYTES, "MAX_RENDERED_BYTES")
    if isinstance(value, (list, tuple, dict, set)) and len(value) > MAX_TEMPLATE_ITEMS:
        raise _too_big("a collection", len(value), MAX_TEMPLATE_ITEMS, "MAX_TEMPLATE_ITEMS")
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > MAX_TEMPLATE_INT_BITS:
        raise _too_big("a number of bits", value.bit_length(), MAX_TEMPLATE_INT_BITS, "MAX_TEMPLATE_INT_BITS")
    return value


def _size(value: Any) -> int:
    return len(value) if isinstance(value, Sized) else 1


def _number(value: Any) -> int:
    return abs(value) if isinstance(value, int) and not isinstance(value, bool) else 0


def _estimate(name: str, target: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
    """An upper bound of the size of what `name(target, *args)` builds, for the calls that can amplify."""
    rest = list(args) + list(kwargs.values())
    if name in ("format", "format_map", "do_format") or (name == "%" and isinstance(target, (str, bytes))):
        fmt = target if isinstance(target, str) else (target.decode("latin-1") if isinstance(target, bytes) else "")
        if _FORMAT_NUMBER.search(fmt):
            return MAX_RENDERED_BYTES + 1
        values: Iterable[Any] = rest[0] if name == "%" and isinstance(rest[0], (tuple, dict)) else rest
        if isinstance(values, dict):
            values = values.values()
        return len(fmt) + sum(min(_size(v), MAX_RENDERED_BYTES) + _number(v) for v in values)
    if name in ("center", "ljust", "rjust", "zfill", "do_center"):
        return _size(target) + max((_number(v) for v in rest), default=0)
    if name in ("expandtabs",) and isinstance(target, (str, bytes)):
        tabs = target.count(b"\t") if isinstance(target, bytes) else target.count("\t")
        return len(target) + tabs * max((_number(v) for v in rest), default=8)
    if name in ("replace", "do_replace") and len(rest) >= 2:
        old, new = rest[0], rest[1]
        if isinstance(target, bytes) and isinstance(old, bytes) and isinstance(new, bytes):
            count = len(target) + 1 if old == b"" else target.count(old)
        elif isinstance(target, str):
            old, new = str(old), str(new)
            count = len(target) + 1 if old == "" else target.count(old)
        else:
            return 0  # bytes.replace refuses str arguments
        return len(target) + count * len(new)
    if name in ("indent", "do_indent"):
        target = str(target)
        width = rest[0] if rest else 4
        width = len(width) if isinstance(width, str) else _number(width)
        return len(target) + (target.count("\n") + 1) * width
    if name in ("translate",) and isinstance(target, (str, bytes)) and rest:
        table = rest[0]
        values = table.values() if isinstance(table, dict) else (table if isinstance(table, (list, tuple)) else ())
        longest = max((_size(v) for v in values if v is not None), default=1)
        return len(target) * max(longest, 1)
    if name in ("join", "do_join"):
        items, sep = (args[0], target) if name == "join" else (target, rest[0] if rest else "")
        if isinstance(items, (list, tuple)):
            return sum(_size(i) if isinstance(i, str) else 32 for i in items) + len(items) * _size(sep)
    if name in ("do_batch", "do_slice"):
        return max((_number(v) for v in rest[:1]), default=0) + _size(target)
    if name == "do_tojson" and any(_number(v) > 16 or (isinstance(v, str) and len(v) > 16) for v in rest):
        return MAX_RENDERED_BYTES + 1  # an indent of thousands, repeated on every line
    if name == "do_sum" and not isinstance(kwargs.get("start", args[1] if len(args) > 1 else 0), (int, float)):
        raise RenderLimitError("sum() adds numbers only in a template (start must be a number)")
    return 0


def _materialized(value: Any) -> Any:
    """An iterator as a list (at most MAX_TEMPLATE_ITEMS long), so that what is built from it can be estimated."""
    if isinstance(value, (str, bytes, list, tuple, dict, set)) or not isinstance(value, Iterable):
        return value
    items = list(islice(value, MAX_TEMPLATE_ITEMS + 1))
    return _limit_size(items)


class _Budget:
    def __init__(self) -> None:
        self.steps = 0
        self.depth = 0
        self.deadline = time.process_time() + MAX_RENDER_SECONDS  # CPU time: a busy machine fails no template


class BoundedEnvironment(ImmutableSandboxedEnvironment):
    """Jinja's immutable sandbox (a template cannot change `hosts`, `vars` or any list or dict: no append,
    extend, update) with StrictUndefined, whose renderings are bounded (see the module docstring)."""

    intercepted_binops = frozenset({"*", "**", "+", "%", "//"})

    def __init__(self) -> None:
        super().__init__(undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False)
        self.globals.pop("lipsum", None)  # lipsum(n=10**9)
        self.globals[_ITERATE] = self._iterate
        self.globals[_CHECK] = _limit_size
        self.filters = {name: self._guarded_filter(f) for name, f in self.filters.items()}
        self._budget = _Budget()
        self._plain_attributes: set[tuple[type, str]] = set()  # (type, name) that getattr found safe

    # -- compiling: every loop's iterable and every `~` concatenation pass through a check ----------
    def bounded_template(self, source: str) -> jinja2.Template:
        """The compiled template; its `per_host` says whether it reads `host` or `vars` (if not, its rendering
        is the same for every host)."""
        tags = source.count("{{") + source.count("{%")
        if tags > MAX_TEMPLATE_TAGS:  # compiling is not bounded otherwise: 500k `{{ 1 }}` took ~20 s
            raise _too_big("a template's {{ }} and {% %} tags", tags, MAX_TEMPLATE_TAGS, "MAX_TEMPLATE_TAGS")
        tree = self.parse(source)
        per_host = bool(meta.find_undeclared_variables(tree) & {"host", "vars"})
        for loop in tree.find_all(nodes.For):
            loop.iter = nodes.Call(nodes.Name(_ITERATE, "load"), [loop.iter], [], None, None, lineno=loop.lineno)
        for concat in list(tree.find_all(nodes.Concat)):
            concat.nodes = [
                nodes.Call(nodes.Name(_CHECK, "load"), [n], [], None, None, lineno=concat.lineno) for n in concat.nodes
            ]
        template = self.template_class.from_code(self, self.compile(tree), self.make_globals(None), None)
        template.per_host = per_host  # type: ignore[attr-defined]
        return template

    def render(self, template: jinja2.Template, **context: Any) -> str:
        self._budget = _Budget()
        return self.concat(template.root_render_func(template.new_context(context)))  # type: ignore[attr-defined]

    # -- the budget ------------------------------------------------------------------------------
    def _step(self) -> None:
        budget = self._budget
        budget.steps += 1
        if budget.steps > MAX_TEMPLATE_STEPS:
            raise RenderLimitError(
                f"more than {MAX_TEMPLATE_STEPS} steps (loop iterations, calls, operations; limit MAX_TEMPLATE_STEPS)"
            )
        if not budget.steps & 15 and time.process_time() > budget.deadline:  # every 16 steps: a clock read is a syscall
            raise RenderLimitError(
                f"rendering took more than {MAX_RENDER_SECONDS:g} s of CPU (limit MAX_RENDER_SECONDS)"
            )

    def _iterate(self, iterable: Any) -> Iterator[Any]:
        for item in iterable:
            self._step()
            yield item

    def concat(self, pieces: Iterable[str]) -> str:  # type: ignore[override]
        """Joins a rendering's output (and every block's, macro's and `{% set %}` body's) within the size limit."""
        out: list[str] = []
        total = 0
        for piece in pieces:
            total += len(piece)
            if total > MAX_RENDERED_BYTES:
                raise _too_big("output", total, MAX_RENDERED_BYTES, "MAX_RENDERED_BYTES")
            out.append(piece)
        return "".join(out)

    def _before(self, name: str, target: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self._step()
        if _estimate(name, target, args, kwargs) > MAX_RENDERED_BYTES:
            raise RenderLimitError(
                f"{name.removeprefix('do_')}() would build more than {MAX_RENDERED_BYTES} "
                "characters (limit MAX_RENDERED_BYTES)"
            )

    def getattr(self, obj: Any, attribute: str) -> Any:
        """Jinja's sandboxed getattr, remembering the (plain type, method name) pairs it found safe."""
        kind = type(obj)
        if kind is dict and attribute not in _DICT_ATTRIBUTES and attribute in obj:
            return obj[attribute]  # h.labels: Jinja prefers an attribute, and a dict has none of that name
        if (kind, attribute) in self._plain_attributes:
            return getattr(obj, attribute)
        value = super().getattr(obj, attribute)
        if (
            kind in _PLAIN_TYPES
            and isinstance(attribute, str)
            and hasattr(kind, attribute)
            and type(value) is _BUILTIN_METHOD
            and value.__name__ in _CHEAP_METHODS
        ):
            self._plain_attributes.add((kind, attribute))
        return value

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        name = getattr(__obj, "__name__", "")
        if (
            type(__obj) is _BUILTIN_METHOD
            and name in _CHEAP_METHODS
            and type(getattr(__obj, "__self__", None)) in _PLAIN_TYPES
        ):
            __self._step()
            return __obj(*args, **kwargs)
        bound = getattr(getattr(__obj, "__wrapped__", __obj), "__self__", None)
        if name == "join" and isinstance(bound, str) and args:
            args = (_materialized(args[0]),) + args[1:]
        __self._before(name, bound, args, kwargs)
        budget = __self._budget
        budget.depth += 1
        try:
            if budget.depth > MAX_TEMPLATE_DEPTH:
                raise RenderLimitError(f"calls nested deeper than {MAX_TEMPLATE_DEPTH} (limit MAX_TEMPLATE_DEPTH)")
            return _limit_size(super().call(__context, __obj, *args, **kwargs))
        finally:
            budget.depth -= 1

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        self._step()
        if operator == "**" and isinstance(left, int) and isinstance(right, int) and right > 0:
            if max(abs(left).bit_length() - 1, 0) * right > MAX_TEMPLATE_INT_BITS:
                raise _too_big(
                    "a power's bits", abs(left).bit_length() * right, MAX_TEMPLATE_INT_BITS, "MAX_TEMPLATE_INT_BITS"
                )
        elif operator == "*":
            if isinstance(left, int) and isinstance(right, int):
                _limit_size(1 << min(left.bit_length() + right.bit_length(), MAX_TEMPLATE_INT_BITS + 1))
            else:
                seq, times = (left, right) if isinstance(right, int) else (right, left)
                if isinstance(seq, Sized) and isinstance(times, int):
                    self._limit_length(seq, len(seq) * max(times, 0))
        elif operator == "+" and isinstance(left, Sized) and isinstance(right, Sized):
            self._limit_length(left, len(left) + len(right))
        elif operator == "%" and isinstance(left, (str, bytes)):
            self._before("%", left, (right,), {})
        return _limit_size(super().call_binop(context, operator, left, right))

    @staticmethod
    def _limit_length(kind: Any, length: int) -> None:
        if isinstance(kind, (str, bytes)):
            if length > MAX_RENDERED_BYTES:
                raise _too_big("a string", length, MAX_RENDERED_BYTES, "MAX_RENDERED_BYTES")
        elif length > MAX_TEMPLATE_ITEMS:
            raise _too_big("a collection", length, MAX_TEMPLATE_ITEMS, "MAX_TEMPLATE_ITEMS")

    def _guarded_filter(self, func: Any) -> Any:
        def guarded(*args: Any, **kwargs: Any) -> Any:
            # Filters marked pass_context/pass_environment get that first; the filtered value comes next.
            shift = 1 if pass_arg is not None else 0
            if func.__name__ == "do_join" and len(args) > shift:
                args = args[:shift] + (_materialized(args[shift]),) + args[shift + 1 :]
            value = args[shift] if len(args) > shift else None
            self._before(func.__name__, value, tuple(args[shift + 1 :]), kwargs)
            return _limit_size(func(*args, **kwargs))

        pass_arg = getattr(func, "jinja_pass_arg", None)
        if pass_arg is not None:
            guarded.jinja_pass_arg = pass_arg  # type: ignore[attr-defined]
        guarded.__name__ = func.__name__
        return guarded

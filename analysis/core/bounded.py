"""Untrusted nested data (checkpoint metadata, CIFAR batches, results files, run-store rows) checked
for size and depth before anything walks it.

Why: ``torch.load(weights_only=True)`` and a restricted unpickler refuse code, but not shape. A pickle
of a few hundred bytes can hold a list whose two items are the same list, 40 levels down: 40 objects
in memory, 2^40 items for anyone who walks it as a tree (``str()``, ``repr()``, a JSON dump, a
recursive copy), the "billion laughs" attack. A pickle or JSON nested 100,000 levels deep makes every
recursive reader raise ``RecursionError``.

:func:`check_bounded` visits each object once (a shared reference is walked once, so the check is
linear in the input's size, whatever it expands to), computes the size and depth the structure has as
a *tree* (what a reader walking it sees), and refuses it past :data:`MAX_NODES` values or
:data:`MAX_DEPTH` levels, or when it contains itself. It never recurses: Python's stack is not the
limit. Containers are ``dict``/``list``/``tuple``/``set``/``frozenset`` (and their subclasses);
everything else (numbers, strings, tensors, arrays) is one value.
"""

from __future__ import annotations

import reprlib
from typing import Any

from analysis.core.errors import LensError

#: values (containers and leaves, dict keys included) a structure may hold as a tree: our largest
#: legitimate input, a checkpoint with a 100,000-epoch history (13 values an epoch) and a 152-layer
#: net's state_dict, stays below it; walking 2 million values takes about a second
MAX_NODES = 2_000_000
#: levels of nesting: our own files nest 4 deep (checkpoint -> meta -> history -> entry)
MAX_DEPTH = 64

_CONTAINERS = (dict, list, tuple, set, frozenset)


def _children(obj: Any, what: str, error: type[LensError], max_nodes: int) -> list[Any]:
    if len(obj) > max_nodes:  # before copying it
        raise error(f"{what} holds more than {max_nodes:,} values; refused")
    if isinstance(obj, dict):
        out: list[Any] = []
        for k, v in obj.items():
            out.append(k)
            out.append(v)
        return out
    return list(obj)


def check_bounded(obj: Any, what: str, error: type[LensError], *, max_nodes: int = MAX_NODES,
                  max_depth: int = MAX_DEPTH) -> int:
    """The number of values in ``obj`` as a tree (1 for a leaf); ``error`` (one sentence naming
    ``what``) when that is more than ``max_nodes``, it nests deeper than ``max_depth``, or it
    contains itself. Time and memory are linear in the number of distinct objects, and the walk
    stops as soon as a limit is passed."""
    if not isinstance(obj, _CONTAINERS):
        return 1
    size: dict[int, int] = {}  # id -> values in the subtree, for containers already finished
    height: dict[int, int] = {}  # id -> levels below and including it
    on_path: set[int] = set()
    keep: list[Any] = []  # the finished objects stay referenced, so their ids stay unique
    # explicit stack of (object, its children, index of the next child to visit)
    stack: list[tuple[Any, list[Any], list[int]]] = [(obj, _children(obj, what, error, max_nodes), [0])]
    on_path.add(id(obj))
    distinct = 1
    while stack:
        node, kids, nxt = stack[-1]
        if len(stack) > max_depth:
            raise error(f"{what} is nested more than {max_depth} levels deep; refused (a file of ours nests "
                        "a few levels)")
        if nxt[0] < len(kids):
            child = kids[nxt[0]]
            nxt[0] += 1
            if not isinstance(child, _CONTAINERS) or id(child) in size:
                continue
            if id(child) in on_path:
                raise error(f"{what} contains itself (a reference cycle); refused")
            distinct += 1
            if distinct > max_nodes:
                raise error(f"{what} holds more than {max_nodes:,} values; refused")
            on_path.add(id(child))
            stack.append((child, _children(child, what, error, max_nodes), [0]))
            continue
        total, deepest = 1, 0
        for child in kids:
            if isinstance(child, _CONTAINERS):
                total += size[id(child)]
                deepest = max(deepest, height[id(child)])
            else:
                total += 1
        if total > max_nodes:
            raise error(f"{what} expands to more than {max_nodes:,} values once its shared references are "
                        "followed (a 'billion laughs' structure: small on disk, unbounded to walk); refused")
        if deepest + 1 > max_depth:
            raise error(f"{what} is nested more than {max_depth} levels deep; refused (a file of ours nests "
                        "a few levels)")
        size[id(node)], height[id(node)] = total, deepest + 1
        keep.append(node)
        on_path.discard(id(node))
        stack.pop()
    return size[id(obj)]


def loads_json(text: str | bytes, what: str, error: type[LensError]) -> Any:
    """``json.loads`` for a file or row we did not write ourselves in this process: bad JSON, nesting
    that Python's decoder cannot follow (it recurses: RecursionError) and anything past the limits of
    :func:`check_bounded` are ``error`` naming ``what``."""
    import json

    try:
        value = json.loads(text)
    except RecursionError:
        raise error(f"{what} is nested too deep to read (JSON nested thousands of levels); refused") from None
    except ValueError as exc:  # JSONDecodeError, or bytes that are not UTF-8
        raise error(f"{what} is not valid JSON ({exc})") from None
    check_bounded(value, what, error)
    return value


#: what a column of a results table may hold: (kind, low, high, missing allowed)
Column = tuple[str, float, float, bool]
TEXT: Column = ("text", 0, 0, True)
DIGITS: Column = ("digits", 0, 0, False)
PERCENT: Column = ("number", 0.0, 100.0, True)
FRACTION: Column = ("number", 0.0, 1.0, True)
SECONDS: Column = ("number", 0.0, 1e9, True)
COUNT: Column = ("whole", 0, 1e12, False)
SEED: Column = ("whole", 0, 2**63 - 1, False)  # a seed is any int64 a recipe accepts
FLAG: Column = ("bool", 0, 1, False)


def check_table(rows: Any, columns: dict[str, Column], what: str, error: type[LensError]) -> list[dict[str, Any]]:
    """``rows`` (a list of records read from a file) checked column by column: every declared column
    present, text as text, whole numbers whole, numbers finite and in range (NaN or None only where
    allowed). The first problem is ``error`` in one sentence naming the row and the column."""
    if not isinstance(rows, list):
        raise error(f"{what}: expected a list of rows, got {type(rows).__name__}")
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise error(f"{what}: row {i + 1} is a {type(row).__name__}, expected a record")
        for col, (kind, lo, hi, missing_ok) in columns.items():
            if col not in row:
                raise error(f"{what}: row {i + 1} has no {col!r}")
            v = row[col]
            bad = ""
            if v is None or (isinstance(v, float) and v != v):  # None or NaN
                bad = "" if missing_ok else "missing"
            elif kind == "text":
                bad = "" if isinstance(v, str) else "not text"
            elif kind == "digits":  # a whole number too large for JSON's floats, written out as text
                bad = "" if isinstance(v, str) and v.isascii() and v.isdigit() else "not a number in digits"
            elif kind == "bool":
                bad = "" if isinstance(v, bool) else "not true or false"
            elif isinstance(v, bool) or not isinstance(v, (int, float)):
                bad = "not a number"
            elif kind == "whole" and not (isinstance(v, int) or float(v).is_integer()):
                bad = "not a whole number"
            elif not lo <= v <= hi:  # inf fails here too
                bad = f"outside {lo:g}..{hi:g}"
            if bad:
                raise error(f"{what}: row {i + 1}, {col} = {short_repr(v, 40)} is {bad}")
    return rows


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother, _REPR.maxlist, _REPR.maxdict = 3, 60, 60, 6, 6


def short_repr(value: object, limit: int = 80) -> str:
    """``repr(value)`` for an error message: at most ``limit`` characters and three levels of nesting
    (``repr`` itself recurses, and raises RecursionError on a value nested a few thousand deep)."""
    try:
        text = _REPR.repr(value)
    except Exception:  # a foreign object whose __repr__ fails: its type is enough to say what it is
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 1] + "…"


__all__ = ["COUNT", "DIGITS", "SEED", "FLAG", "FRACTION", "MAX_DEPTH", "MAX_NODES", "PERCENT", "SECONDS", "TEXT", "Column", "check_bounded",
           "check_table", "loads_json", "short_repr"]

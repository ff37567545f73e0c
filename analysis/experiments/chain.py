"""A net as a chain of residual units, for the lesion engine: a stem, n units each of which can run with
or without its branch, and a head. :mod:`analysis.experiments.lesion` runs every sequence through this
one interface, whether the net is a spec-built ResNet (its blocks are the units) or a program opened
from a file (its graph is cut at the units' inputs and outputs).

Cutting a program. Each residual unit found in the graph (:class:`~analysis.arch.units.Unit`) names its
input x, its add, the add's operand on the shortcut side and the last op that alone follows the add.
The units form a chain when each one's segment (from the previous unit's output, or the stem's, to its
own output) reads no activation from before that point: a ResNet's blocks and a transformer's
attention and MLP units do; U-Net's long skips and units nested in another's branch do not. Each
segment becomes a small ``GraphModule`` over the program's own weights. Deleting a unit is the same
segment with its add replaced by the shortcut operand (Veit et al. 2016: the branch removed, the
shortcut and what follows the add kept): y = after(a·s(x)).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import torch
from torch import Tensor, fx
from torch.export import ExportedProgram

from analysis.arch.graphnet import GraphNet, open_program
from analysis.arch.units import Unit
from analysis.core.errors import ConfigError


class ChainError(ConfigError):
    """A net whose residual units cannot be run as one chain (what applies and what does not is said)."""


class UnitChain(Protocol):
    """What the lesion engine runs: ``stem``, then unit ``i`` with or without its branch, then ``head``."""

    @property
    def n(self) -> int: ...

    @property
    def units(self) -> Sequence[Unit]: ...

    def stem(self, x: Tensor) -> Tensor: ...

    def unit(self, i: int, h: Tensor, keep: bool) -> Tensor: ...

    def head(self, h: Tensor) -> Tensor: ...

    def check_sequence(self, seq: Sequence[tuple[int, bool]]) -> None: ...


def _ancestors(end: fx.Node, stop: fx.Node | None) -> set[fx.Node]:
    """``end`` and every node it reads, not looking past ``stop`` (a segment's input)."""
    seen: set[fx.Node] = set()
    todo = [end]
    while todo:
        node = todo.pop()
        if node not in seen:
            seen.add(node)
            if node is not stop:
                todo.extend(node.all_input_nodes)
    return seen


def _descendants(start: fx.Node) -> set[fx.Node]:
    seen: set[fx.Node] = set()
    todo = [start]
    while todo:
        node = todo.pop()
        if node not in seen:
            seen.add(node)
            todo.extend(node.users)
    return seen


class ProgramChain:
    """An exported program (with its weights) cut into stem, units and head (see the module docstring)."""

    def __init__(self, ep: ExportedProgram, net: GraphNet | None = None, name: str = "program") -> None:
        self.net = net if net is not None else open_program(ep, name=name)
        self.gm = ep.module()
        graph = self.gm.graph
        self.by_name = {n.name: n for n in graph.nodes}
        inputs = [n for n in graph.nodes if n.op == "placeholder"]
        if len(inputs) != 1:
            raise ChainError(f"{self.net.name} takes {len(inputs)} inputs; the lesion engine runs nets of one input")
        self.input = inputs[0]
        val = self.input.meta.get("val")
        self.batch = int(val.shape[0]) if isinstance(val, Tensor) and val.dim() > 0 else 1
        (out,) = [n for n in graph.nodes if n.op == "output"]
        outs = out.args[0]
        result = outs[0] if isinstance(outs, (tuple, list)) and len(outs) == 1 else outs
        if not isinstance(result, fx.Node):
            raise ChainError(f"{self.net.name} returns {type(result).__name__}; the lesion engine reads one tensor")
        self.output = result
        self.units: tuple[Unit, ...] = tuple(self.net.units)
        if not self.units:
            raise ChainError(f"{self.net.name} has no residual unit to delete")
        nested = [u.name for u in self.units if u.parent is not None]
        if nested:
            raise ChainError(f"{self.net.name}: units {', '.join(nested[:3])} sit inside another unit's branch, so "
                             "the units are not one chain; deleting a unit alone applies, reordering does not")
        order = {n.name: i for i, n in enumerate(graph.nodes)}
        self.units = tuple(sorted(self.units, key=lambda u: order[u.add_node]))
        self.live = _descendants(self.input)
        ends = [self.by_name[u.exit_node] for u in self.units]
        first = self.by_name[self.units[0].entry_node]
        self._stem = self._segment(None, first)
        starts = [first, *ends[:-1]]
        self._keep = [self._segment(s, e) for s, e in zip(starts, ends, strict=True)]
        self._deleted: dict[int, fx.GraphModule] = {}
        self._starts, self._ends = starts, ends
        self._head = self._segment(ends[-1], self.output)

    @property
    def n(self) -> int:
        return len(self.units)

    def _segment(self, start: fx.Node | None, end: fx.Node, deleted: Unit | None = None) -> fx.GraphModule:
        """The ops that compute ``end`` from ``start`` (the net's input for the stem) as a GraphModule of
        one input over the program's weights; with ``deleted``, that unit's add is its shortcut operand."""
        needed = _ancestors(end, start)
        down = _descendants(start) if start is not None else self.live
        g = fx.Graph()
        env: dict[fx.Node, fx.Node] = {}
        src = start if start is not None else self.input
        env[src] = g.placeholder("h")
        for node in self.gm.graph.nodes:
            if node not in needed or node in env:
                continue
            if node.op == "placeholder" or (node in self.live and node not in down):
                raise ChainError(f"{self.net.name}: the ops up to {end.name} read an activation from before "
                                 f"{src.name} (a long skip), so its units are not one chain; deleting a unit "
                                 "alone applies, reordering does not")
            if deleted is not None and node.name == deleted.add_node:
                env[node] = env[self.by_name[deleted.shortcut_node]]
                continue
            env[node] = g.node_copy(node, lambda a: env[a])
        g.output(env[end])
        g.eliminate_dead_code()
        return fx.GraphModule(self.gm, g)

    def stem(self, x: Tensor) -> Tensor:
        return self._run(self._stem, x)

    def unit(self, i: int, h: Tensor, keep: bool) -> Tensor:
        if keep:
            return self._run(self._keep[i], h)
        if i not in self._deleted:
            self._deleted[i] = self._segment(self._starts[i], self._ends[i], deleted=self.units[i])
        return self._run(self._deleted[i], h)

    def head(self, h: Tensor) -> Tensor:
        return self._run(self._head, h)

    def _run(self, gm: fx.GraphModule, h: Tensor) -> Tensor:
        """``gm`` on ``h`` in pieces of the batch the program was exported with: an exported graph keeps
        its example's batch in its reshapes (a transformer's heads), so other batches are cut into
        pieces of that size, the last one padded with zeros and its padding dropped after."""
        b = self.batch
        if h.shape[0] == b:
            out: Tensor = gm(h)
            return out
        pieces = []
        for lo in range(0, h.shape[0], b):
            part = h[lo:lo + b]
            short = b - part.shape[0]
            if short:
                part = torch.cat([part, part.new_zeros((short, *part.shape[1:]))])
            y: Tensor = gm(part)
            pieces.append(y[:b - short])
        return torch.cat(pieces)

    def check_sequence(self, seq: Sequence[tuple[int, bool]]) -> None:
        """Every unit once, each where its input shape flows (deletion keeps the order)."""
        if len(seq) != self.n:
            raise ConfigError(f"a sequence lists every unit once: expected {self.n}, got {len(seq)}")
        for p, (i, _) in enumerate(seq):
            if not 0 <= i < self.n:
                raise ConfigError(f"unit index {i} out of range: the net has units 0..{self.n - 1}")
            a, b = self.units[p], self.units[i]
            if (a.in_shape, a.out_shape) != (b.in_shape, b.out_shape):
                raise ConfigError(f"unit {b.name} cannot take the place of {a.name}: shapes "
                                  f"{b.in_shape}->{b.out_shape} and {a.in_shape}->{a.out_shape} differ")

    def eval(self) -> ProgramChain:
        return self  # an exported program runs as exported (eval mode)

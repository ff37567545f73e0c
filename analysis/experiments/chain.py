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

Sequences. A step is ``(i, keep)``: unit i with or without its branch; a sequence may list a unit
twice (run it again, "looping") or leave it out, as long as each step gets the shape it takes
(:func:`check_steps`). A step ``((i, j), True)`` runs units i and j in parallel on one input h,
their branches summed: y = h + F_i(h) + F_j(h) (Sun et al. 2024, "Transformer Layers as Painters").
That sum is defined only where the unit's output is its input plus its branch: an identity shortcut,
unweighted, with nothing after the add (pre-activation ResNets, pre-norm transformers); a
post-activation ResNet's ReLU after the add has no such reading, so it is refused.

Plain nets. :class:`LayerChain` cuts a program at the outputs of named modules instead (a
transformer's ``blocks.0 .. blocks.N``, a VGG's layers): each layer is a unit whose deletion passes its
input on unchanged, as Veit et al. delete a layer of a plain net, so a residual net and its plain twin
run the same sweeps; :func:`layer_candidates` lists the modules a program can be cut at.
"""

from __future__ import annotations

import numbers
import re
from collections.abc import Callable, Iterable, Sequence
from functools import cached_property
from typing import Protocol

import torch
from torch import Tensor, fx
from torch.export import ExportedProgram

from analysis.arch.blockplan import Join
from analysis.arch.graphnet import GraphNet, open_program
from analysis.arch.units import Unit
from analysis.core.errors import ConfigError

MAX_EXPORT_BATCH = 4096  # the largest exported batch a program is run in pieces of


class ChainError(ConfigError):
    """A net whose residual units cannot be run as one chain (what applies and what does not is said)."""


Shape = tuple[int, ...]  # an activation's shape without the batch axis
# One step of a sequence: (unit index, keep its branch), or ((i, j), True) for units i and j run in
# parallel on one input (their branches summed). The first form is every sequence ever stored.
Step = tuple[int | tuple[int, int], bool]


class UnitChain(Protocol):
    """What the lesion engine runs: ``stem``, then unit ``i`` with or without its branch, then ``head``;
    ``branch(i, h)`` is unit i's branch alone on h (only asked of units :meth:`check_sequence` lets run
    in parallel)."""

    @property
    def n(self) -> int: ...

    @property
    def units(self) -> Sequence[Unit]: ...

    def stem(self, x: Tensor) -> Tensor: ...

    def unit(self, i: int, h: Tensor, keep: bool) -> Tensor: ...

    def branch(self, i: int, h: Tensor) -> Tensor: ...

    def head(self, h: Tensor) -> Tensor: ...

    def check_sequence(self, seq: Sequence[Step]) -> None: ...


def run_step(chain: UnitChain, step: Step, h: Tensor) -> Tensor:
    """One step of a sequence on ``h``. A parallel pair is h + F_i(h) + F_j(h), summed in that order:
    both read the same input, as Sun et al. 2024 run layers in parallel."""
    i, keep = step
    if isinstance(i, tuple):
        a, b = i
        return h + chain.branch(a, h) + chain.branch(b, h)
    return chain.unit(i, h, keep)


def positional(seq: Sequence[Step], n: int) -> bool:
    """A sequence of n single steps, the kind the engine has always run: checked unit by unit against
    the one whose place it takes, so its refusals read as they always have."""
    return len(seq) == n and not any(isinstance(step[0], tuple) for step in seq)


def dims_text(shape: Sequence[int]) -> str:
    """'32×8×8'."""
    return "×".join(str(v) for v in shape)


def parallel_refusal(u: Unit) -> str | None:
    """Why unit ``u`` cannot run in parallel with another (one sentence), or None: y = h + F_i(h) + F_j(h)
    reads each unit as its input plus its branch, which holds for an unweighted identity shortcut with
    nothing after the add only."""
    if u.shortcut == "none":
        return f"{u.name} has no shortcut (a plain layer), so its output is not its input plus a branch"
    if u.post:
        return (f"{u.name} applies {u.post} after its add (post-activation: y = {u.post}(x + F(x))), so summing "
                "two branches onto one input is undefined; only units with nothing after the add (pre-activation, "
                "pre-norm) run in parallel")
    if u.shortcut != "identity":
        return f"{u.name} has a {u.shortcut} shortcut, not the identity, so its branch does not add onto its input"
    if u.join.shortcut.kind != "one" or u.join.branch.kind != "one":
        return f"{u.name} weighs its paths ({u.join.label}); running in parallel sums unweighted branches"
    return None


def check_steps(seq: Sequence[Step], *, names: Sequence[str], ins: Sequence[Shape], outs: Sequence[Shape],
                parallel: Callable[[int], str | None], deletion: Callable[[int], str | None] | None = None,
                noun: str = "unit") -> None:
    """Refuse a sequence before any work: an index out of range, a step given a shape it does not take
    (``ins[i]``: what unit i's step takes; ``outs[i]``: what it gives, with or without its branch), a
    parallel pair either of whose units ``parallel`` refuses (its reason) or whose shapes differ, a
    deletion ``deletion`` refuses, or a last output the head does not take (``outs[-1]``). The stem
    gives ``ins[0]``. Messages name both shapes."""
    n = len(names)

    def index(k: object) -> int:
        if isinstance(k, bool) or not isinstance(k, numbers.Integral) or not 0 <= int(k) < n:
            raise ConfigError(f"{noun} index {k} out of range: the net has {noun}s 0..{n - 1}")
        return int(k)

    cur, after = ins[0], ""
    for step in seq:
        i, keep = step
        if isinstance(i, tuple):
            if len(i) != 2 or not keep:
                raise ConfigError(f"a parallel step is ((i, j), True), both branches kept; got {step!r}")
            a, b = index(i[0]), index(i[1])
            label = f"{names[a]} || {names[b]}"
            if a == b:
                raise ConfigError(f"a parallel step runs two different {noun}s; got {label}")
            for k in (a, b):
                if (why := parallel(k)) is not None:
                    raise ConfigError(f"{names[a]} and {names[b]} cannot run in parallel: {why}")
            if ins[a] != ins[b]:
                raise ConfigError(f"{names[a]} and {names[b]} cannot run in parallel: they take "
                                  f"{dims_text(ins[a])} and {dims_text(ins[b])}")
            take, give, what = ins[a], outs[a], f"{noun}s {label} cannot run"
        else:
            k = index(i)
            if not keep and deletion is not None and (why := deletion(k)) is not None:
                raise ConfigError(why)
            take, give, what, label = ins[k], outs[k], f"{noun} {names[k]} cannot run", names[k]
        if take != cur:
            where = f"after {after}" if after else "first"
            src = "" if after else " from the stem"
            raise ConfigError(f"{what} {where}: {'they take' if ' || ' in label else 'it takes'} "
                              f"{dims_text(take)}, gets {dims_text(cur)}{src}")
        cur, after = give, label
    if cur != outs[-1]:
        raise ConfigError(f"the sequence ends with {dims_text(cur)} (after {after or 'the stem'}), but the head "
                          f"takes {dims_text(outs[-1])}")


def _walk(start: fx.Node, step: Callable[[fx.Node], Iterable[fx.Node]], stop: fx.Node | None = None) -> set[fx.Node]:
    """``start`` and every node reached from it by ``step`` (a node's inputs or its users), not past ``stop``."""
    seen: set[fx.Node] = set()
    todo = [start]
    while todo:
        node = todo.pop()
        if node not in seen:
            seen.add(node)
            if node is not stop:
                todo.extend(step(node))
    return seen


def _ancestors(end: fx.Node, stop: fx.Node | None) -> set[fx.Node]:
    """``end`` and every node it reads, not looking past ``stop`` (a segment's input)."""
    return _walk(end, lambda n: n.all_input_nodes, stop)


def _descendants(start: fx.Node) -> set[fx.Node]:
    """``start`` and every node that reads it, directly or not."""
    return _walk(start, lambda n: n.users)


def _node_shape(node: fx.Node) -> Shape:
    """The node's output shape without the batch axis (() where the graph records none)."""
    val = node.meta.get("val")
    return tuple(int(d) for d in val.shape[1:]) if isinstance(val, Tensor) else ()


class _Program:
    """An exported program's graph, ready to be cut into segments of one input each: what
    :class:`ProgramChain` and :class:`LayerChain` share (the stem and head are segments they cut)."""

    _stem: fx.GraphModule
    _head: fx.GraphModule

    def __init__(self, ep: ExportedProgram, net: GraphNet | None = None, name: str = "program") -> None:
        self.net = net if net is not None else open_program(ep, name=name)
        self.program = ep  # what a shard is sent (its archive bytes) and rebuilt from
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
            raise ChainError(f"{self.net.name} returns {type(result).__name__}; lesions and paths read one tensor, "
                             "the class scores")
        if not 1 <= self.batch <= MAX_EXPORT_BATCH:
            # every input is run in pieces of this batch (the last one padded): 0 cannot hold one, and a
            # huge one would pad a small test set to it in every activation
            raise ChainError(f"{self.net.name} was exported for a batch of {self.batch:,}; the engine runs it in "
                             f"pieces of that batch, so export it for 1 to {MAX_EXPORT_BATCH:,} inputs")
        self.output = result
        self.live = _descendants(self.input)

    def _segment(self, start: fx.Node | None, end: fx.Node,
                 deleted: Unit | Sequence[Unit] | None = None) -> fx.GraphModule:
        """The ops that compute ``end`` from ``start`` (the net's input for the stem) as a GraphModule of
        one input over the program's weights; with ``deleted`` (a unit, or several), each such unit's add
        is its shortcut operand."""
        gone = {u.add_node: u for u in ([] if deleted is None else [deleted] if isinstance(deleted, Unit)
                                         else deleted)}
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
                                 f"{src.name} (a long skip), so it is not one chain of pieces")
            if node.name in gone:
                env[node] = env[self.by_name[gone[node.name].shortcut_node]]
                continue
            env[node] = g.node_copy(node, lambda a: env[a])
        g.output(env[end])
        g.eliminate_dead_code()
        return fx.GraphModule(self.gm, g)

    def stem(self, x: Tensor) -> Tensor:
        return self._run(self._stem, x)

    def head(self, h: Tensor) -> Tensor:
        return self._run(self._head, h)

    def _run(self, gm: fx.GraphModule, h: Tensor) -> Tensor:
        """``gm`` (one input, one output) on ``h`` in pieces of the exported batch (:meth:`_run_pieces`)."""
        return self._run_pieces(gm, h)[0]

    def _run_pieces(self, gm: fx.GraphModule, *inputs: Tensor) -> tuple[Tensor, ...]:
        """``gm`` on ``inputs`` in pieces of the batch the program was exported with: an exported graph
        keeps its example's batch in its reshapes (a transformer's heads), so other batches are cut into
        pieces of that size, the last one padded with zeros and its padding dropped after. The pieces
        are slices and their padding a concatenation, both differentiable, so gradients run through
        any batch as its values do (the path measurement's graphs take and give several tensors)."""
        def call(args: Sequence[Tensor]) -> tuple[Tensor, ...]:
            out = gm(*args)
            return tuple(out) if isinstance(out, (tuple, list)) else (out,)

        b, n = self.batch, inputs[0].shape[0]
        if n == b:
            return call(inputs)
        pieces = []
        for lo in range(0, n, b):
            parts = [t[lo:lo + b] for t in inputs]
            short = b - parts[0].shape[0]
            if short:
                parts = [torch.cat([p, p.new_zeros((short, *p.shape[1:]))]) for p in parts]
            pieces.append([y[:b - short] for y in call(parts)])
        return tuple(torch.cat(col) for col in zip(*pieces, strict=True))


class WholeProgram(_Program):
    """An exported program run whole on a batch of any size (in pieces of the batch it was exported with,
    :meth:`_Program._run_pieces`): its class scores, as :mod:`analysis.experiments.precisioneval` reads them.
    It runs as exported (eval mode); autocast, where the caller sets it, applies to its ops as to any."""

    def __call__(self, x: Tensor) -> Tensor:
        return self._run(self.gm, x)


class ProgramChain(_Program):
    """An exported program (with its weights) cut into stem, units and head (see the module docstring)."""

    def __init__(self, ep: ExportedProgram, net: GraphNet | None = None, name: str = "program") -> None:
        super().__init__(ep, net, name)
        graph = self.gm.graph
        self.units: tuple[Unit, ...] = tuple(self.net.units)
        if not self.units:
            raise ChainError(f"{self.net.name} has no residual unit to delete")
        nested = [u.name for u in self.units if u.parent is not None]
        if nested:
            raise ChainError(f"{self.net.name}: units {', '.join(nested[:3])} sit inside another unit's branch, so "
                             "the units are not one chain; deleting a unit alone applies, reordering does not")
        order = {n.name: i for i, n in enumerate(graph.nodes)}
        self.units = tuple(sorted(self.units, key=lambda u: order[u.add_node]))
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

    def unit(self, i: int, h: Tensor, keep: bool) -> Tensor:
        if keep:
            return self._run(self._keep[i], h)
        if i not in self._deleted:
            self._deleted[i] = self._segment(self._starts[i], self._ends[i], deleted=self.units[i])
        return self._run(self._deleted[i], h)

    def branch(self, i: int, h: Tensor) -> Tensor:
        """Unit ``i``'s branch operand of its add (b·F(x)) from its segment's input ``h``."""
        if i not in self._branches:
            unit = self.units[i]
            add = self.by_name[unit.add_node]
            others = [a for a in add.args[:2] if isinstance(a, fx.Node) and a.name != unit.shortcut_node]
            if len(others) != 1:
                raise ChainError(f"{self.net.name}: the add of unit {unit.name} does not take its shortcut and one "
                                 "branch operand, so its branch cannot run alone")
            self._branches[i] = self._segment(self._starts[i], others[0])
        return self._run(self._branches[i], h)

    @cached_property
    def _branches(self) -> dict[int, fx.GraphModule]:
        return {}  # built on first use: only a parallel step asks for a branch alone

    def _parallel_refusal(self, i: int) -> str | None:
        """Why unit i cannot run in parallel (:func:`parallel_refusal`), or, in a program, why its
        branch does not add onto its segment's input: ops between the previous unit's output and this
        unit's shortcut, or after its add, would run on one branch's sum only."""
        u = self.units[i]
        why = parallel_refusal(u)
        if why is None and (u.shortcut_node != self._starts[i].name or u.exit_node != u.add_node):
            why = (f"ops run between {u.name}'s input and its shortcut or after its add, so its output is not its "
                   "segment's input plus its branch")
        return why

    def check_sequence(self, seq: Sequence[Step]) -> None:
        """Each step where its input shape flows (:func:`check_steps`); a sequence of every position once
        is checked unit by unit against the one whose place it takes, as it always was, and its refusal
        names that unit."""
        try:
            check_steps(seq, names=[u.name for u in self.units], ins=[_node_shape(s) for s in self._starts],
                        outs=[_node_shape(e) for e in self._ends], parallel=self._parallel_refusal)
        except ConfigError:
            if positional(seq, self.n):
                self._check_places(seq)  # a flow refused is a place refused: the older message
            raise

    def _check_places(self, seq: Sequence[Step]) -> None:
        for p, (i, _) in enumerate(seq):
            if isinstance(i, tuple) or not 0 <= i < self.n:
                raise ConfigError(f"unit index {i} out of range: the net has units 0..{self.n - 1}")
            a, b = self.units[p], self.units[i]
            if (a.in_shape, a.out_shape) != (b.in_shape, b.out_shape):
                raise ConfigError(f"unit {b.name} cannot take the place of {a.name}: shapes "
                                  f"{b.in_shape}->{b.out_shape} and {a.in_shape}->{a.out_shape} differ")

    def eval(self) -> ProgramChain:
        return self  # an exported program runs as exported (eval mode)

    # ------------------------------------------------------------------------- path ensembles
    # What :mod:`analysis.experiments.paths` needs to split the gradient between a unit's two paths (Veit
    # et al. 2016): each segment cut at its add, into the add's operands as a function of the segment's
    # input, and the join (the add and what alone follows it) as a function of the two operands.

    @cached_property
    def _path_graphs(self) -> dict[int, tuple[fx.GraphModule, fx.GraphModule]]:
        return {}  # built on first use, per unit: most chains are only ever run whole

    def path_graphs(self, i: int) -> tuple[fx.GraphModule, fx.GraphModule]:
        """Unit ``i``'s segment as (split, join): ``split(h)`` gives the add's operands (a·s(x), the branch
        side), from the segment's input h (the previous unit's output; the ops between it and the unit's
        entry, a norm outside the units, belong to both paths), and ``join(s, r)`` the segment's output."""
        if i not in self._path_graphs:
            self._path_graphs[i] = self._path_split(i)
        return self._path_graphs[i]

    def _path_split(self, i: int) -> tuple[fx.GraphModule, fx.GraphModule]:
        unit, start, end = self.units[i], self._starts[i], self._ends[i]
        if unit.join.gated:
            # the path view holds a gate at its forward value (as the spec-built blocks' tape does); the
            # program's operands carry the gate's own dependence on x, which no path takes
            raise ChainError(f"{self.net.name}: unit {unit.name} is gated ({unit.join.label}); the path "
                             "decomposition of a program's units applies to ungated joins only")
        add, short = self.by_name[unit.add_node], self.by_name[unit.shortcut_node]
        others = [a for a in add.args[:2] if a is not short]
        if len(others) != 1 or not isinstance(others[0], fx.Node):
            raise ChainError(f"{self.net.name}: the add of unit {unit.name} does not take its shortcut "
                             f"{short.name} and one branch operand; its two paths cannot be told apart")
        branch = others[0]
        down, operands = _descendants(start), _ancestors(short, start) | _ancestors(branch, start)
        split = fx.Graph()
        env: dict[fx.Node, fx.Node] = {start: split.placeholder("h")}
        for node in self.gm.graph.nodes:
            if node in env or node not in operands:
                continue
            if node.op == "placeholder" or (node in self.live and node not in down):
                raise ChainError(f"{self.net.name}: unit {unit.name} reads an activation from before "
                                 f"{start.name} (a long skip), so its units are not one chain")
            env[node] = split.node_copy(node, lambda a: env[a])
        split.output((env[short], env[branch]))
        split.eliminate_dead_code()
        # the join: walk back from the segment's output to the operands; any other activation it read
        # would carry gradient past both paths, so it is refused rather than silently dropped
        needed: set[fx.Node] = set()
        todo = [end]
        while todo:
            node = todo.pop()
            if node not in needed:
                needed.add(node)
                if node is not short and node is not branch:
                    todo.extend(node.all_input_nodes)
        after = _descendants(add)
        join = fx.Graph()
        jenv: dict[fx.Node, fx.Node] = {short: join.placeholder("s"), branch: join.placeholder("r")}
        for node in self.gm.graph.nodes:
            if node in jenv or node not in needed:
                continue
            if node.op == "placeholder" or (node in self.live and node not in after):
                raise ChainError(f"{self.net.name}: what follows the add of unit {unit.name} reads {node.name}, "
                                 "an activation besides the add's operands, so the unit's paths do not split there")
            jenv[node] = join.node_copy(node, lambda a: jenv[a])
        join.output(jenv[end])
        join.eliminate_dead_code()
        return fx.GraphModule(self.gm, split), fx.GraphModule(self.gm, join)

    def path_operands(self, i: int, h: Tensor) -> tuple[Tensor, Tensor]:
        """(a·s(x), branch side) of unit ``i``'s add from its segment's input ``h``, differentiable."""
        s, r = self._run_pieces(self.path_graphs(i)[0], h)
        return s, r

    def path_join(self, i: int, s: Tensor, r: Tensor) -> Tensor:
        """Unit ``i``'s output from its add's operands, differentiable."""
        (y,) = self._run_pieces(self.path_graphs(i)[1], s, r)
        return y

    def check_path_inputs(self, x: Tensor) -> None:
        """``x`` has the shape the program was exported for, batch aside."""
        val = self.input.meta.get("val")
        want = tuple(val.shape[1:]) if isinstance(val, Tensor) else None
        if want is not None and tuple(x.shape[1:]) != want:
            raise ConfigError(f"{self.net.name} takes inputs of shape (batch, {', '.join(map(str, want))}), "
                              f"got {tuple(x.shape)}")


# ----------------------------------------------------------------------------------- plain nets
_INDEXED = re.compile(r"^(?:(.*)\.)?(\d+)$")  # 'blocks.3' -> ('blocks', '3'); a root Sequential's '3' too


def _innermost(node: fx.Node) -> str:
    """The innermost module path whose forward ran the node ('' for the net itself), as graphnet reads it."""
    stack = node.meta.get("nn_module_stack") or {}
    return str(list(stack.values())[-1][0]) if stack else ""


def _owns(module: str, path: str) -> bool:
    return path == module or path.startswith(module + ".")


def layer_candidates(ep: ExportedProgram) -> dict[str, list[str]]:
    """The modules a program can be cut at by :class:`LayerChain`: for each repeated container (a module
    with children ``0, 1, ..``, two at least, that run ops), its children in the order they first run;
    outer containers first (``{"blocks": ["blocks.0", "blocks.1", ...], "blocks.0.mlp": [...]}``; a
    Sequential net's own children under "")."""
    first: dict[str, int] = {}
    for pos, node in enumerate(ep.graph_module.graph.nodes):
        if node.op == "call_function":
            for entry in (node.meta.get("nn_module_stack") or {}).values():
                first.setdefault(str(entry[0]), pos)
    groups: dict[str, list[str]] = {}
    for path in sorted(first, key=lambda p: (p.count("."), first[p])):
        match = _INDEXED.match(path)
        if match:
            groups.setdefault(match.group(1) or "", []).append(path)
    return {parent: sorted(kids, key=first.__getitem__) for parent, kids in groups.items() if len(kids) >= 2}


class LayerChain(_Program):
    """A program cut at the outputs of the named modules (see the module docstring): layer i is the ops
    its module owns (``nn_module_stack``), run from the previous layer's output, so what runs between
    two layers belongs to the later one. Deleted, a layer passes its input on unchanged, the ops before
    it still run: Veit et al. 2016 delete a layer of a plain net so. Its units are records with no
    shortcut ("none"), so every sweep plans over them as over a plain ResNet's blocks, except a layer
    made of residual units that carry its input through (a pre-norm transformer block): its shortcut is
    the identity and it can also run in parallel with another, its change being L(h) - h. A layer whose
    output's shape is not its input's cannot be deleted."""

    def __init__(self, ep: ExportedProgram, modules: Sequence[str], net: GraphNet | None = None,
                 name: str = "program") -> None:
        super().__init__(ep, net, name)
        if isinstance(modules, str) or not all(isinstance(m, str) for m in modules):
            raise ChainError(f"{self.net.name}: name the layers' modules as a list of module paths (text)")
        mods = list(dict.fromkeys(modules))
        offer = "; ".join(f"{k or '(net)'}: {', '.join(v[:3])}{', ...' if len(v) > 3 else ''}"
                          for k, v in layer_candidates(ep).items()) or "none is repeated"
        if not mods or "" in mods:
            raise ChainError(f"{self.net.name}: name the modules to cut it at (repeated ones: {offer})")
        for a in mods:
            for b in mods:
                if a != b and _owns(a, b):
                    raise ChainError(f"{self.net.name}: {b} sits inside {a}; the layers of a chain are disjoint")
        order = {node: k for k, node in enumerate(self.gm.graph.nodes)}
        ops = [n for n in self.gm.graph.nodes if n.op == "call_function" and n in self.live]
        cuts: list[tuple[str, fx.Node, fx.Node]] = []
        for m in mods:
            mine = {n for n in ops if _owns(m, _innermost(n))}
            if not mine:
                raise ChainError(f"{self.net.name}: no op of {m} runs on the input (repeated modules: {offer})")
            ins = sorted({a for n in mine for a in n.all_input_nodes if a in self.live and a not in mine},
                         key=order.__getitem__)
            outs = [n for n in mine if any(u not in mine for u in n.users)]
            if len(ins) != 1:
                raise ChainError(f"{self.net.name}: {m} reads {len(ins)} activations from outside it "
                                 f"({', '.join(a.name for a in ins[:3])}); a layer of a chain reads one")
            if len(outs) != 1:
                raise ChainError(f"{self.net.name}: {m} gives {len(outs)} activations to the rest of the net; "
                                 "a layer of a chain gives one")
            cuts.append((m, ins[0], outs[0]))
        cuts.sort(key=lambda c: order[c[2]])
        firsts, lasts = [c[1] for c in cuts], [c[2] for c in cuts]
        self._starts = [firsts[0], *lasts[:-1]]
        self._stem = self._segment(None, firsts[0])
        self._keep = [self._segment(s, e) for s, e in zip(self._starts, lasts, strict=True)]
        self._skip = [self._segment(s, f) for s, f in zip(self._starts, firsts, strict=True)]
        self._head = self._segment(lasts[-1], self.output)
        self._firsts, self._lasts = firsts, lasts
        rows = self.net.nodes

        def cost(m: str, col: str) -> int:
            return sum(int(v) for path, v in zip(rows["module"], rows[col], strict=True) if _owns(m, str(path)))

        self.units: tuple[Unit, ...] = tuple(
            Unit(name=m, owner=m, shortcut="identity" if start is f and self._residual_layer(m, f, e) else "none",
                 join=Join(),
                 in_shape=_node_shape(f), out_shape=_node_shape(e), branch_params=cost(m, "params"),
                 branch_macs=cost(m, "macs"), entry_node=f.name, exit_node=e.name)
            # a layer's segment starts at the previous layer's output: ops between the two (a norm)
            # belong to it, and then L(h) - h is no change of the layer's own input
            for (m, f, e), start in zip(cuts, self._starts, strict=True))

    @property
    def n(self) -> int:
        return len(self.units)

    def unit(self, i: int, h: Tensor, keep: bool) -> Tensor:
        return self._run(self._keep[i] if keep else self._skip[i], h)

    def _residual_layer(self, module: str, first: fx.Node, last: fx.Node) -> bool:
        """Whether the layer is its input plus what it adds: the residual units found inside it run one
        after another from the layer's input to its output, each with an unweighted identity shortcut
        and nothing after its add (a pre-norm transformer block: x + attn(norm1(x)), then + mlp(norm2(.))).
        Such a layer L has one change F(h) = L(h) - h, so it can run in parallel with another
        (y = h + F_i(h) + F_j(h), Sun et al. 2024 run whole layers so); any other layer cannot."""
        inside = sorted((u for u in self.net.units if _owns(module, u.owner) and u.add_node in self.by_name),
                        key=lambda u: list(self.by_name).index(u.add_node))
        if not inside or any(parallel_refusal(u) is not None or u.exit_node != u.add_node for u in inside):
            return False
        starts = [first.name] + [u.add_node for u in inside[:-1]]
        return [u.entry_node for u in inside] == starts and inside[-1].add_node == last.name

    def branch(self, i: int, h: Tensor) -> Tensor:
        """A residual layer's change L(h) - h (see :meth:`_residual_layer`); refused for any other."""
        why = self._parallel_refusal(i)
        if why is not None:
            raise ChainError(why)
        return self.unit(i, h, True) - h

    def _parallel_refusal(self, i: int) -> str | None:
        """Why layer i cannot run in parallel: a layer holding residual units that is still not its input
        plus one change (a norm after an add, ops before its first unit) says so, not "a plain layer"."""
        u = self.units[i]
        if u.shortcut == "none" and any(_owns(u.name, r.owner) for r in self.net.units):
            return (f"{u.name} holds residual units but is not its input plus one change (an op follows an add "
                    "or runs before its first unit), so its change cannot be summed with another's")
        return parallel_refusal(u)

    def _deletion_refusal(self, i: int) -> str | None:
        a, b = _node_shape(self._firsts[i]), _node_shape(self._lasts[i])
        if a == b:
            return None
        return (f"layer {self.units[i].name} cannot be deleted: it takes {dims_text(a)} and gives {dims_text(b)}, "
                "and a deleted layer passes its input on unchanged")

    def check_sequence(self, seq: Sequence[Step]) -> None:
        """Each step where its input shape flows (:func:`check_steps`); deletions of layers that change
        the shape and parallel steps refused."""
        check_steps(seq, names=[u.name for u in self.units], ins=[_node_shape(s) for s in self._starts],
                    outs=[_node_shape(e) for e in self._lasts], parallel=self._parallel_refusal,
                    deletion=self._deletion_refusal, noun="layer")

    def eval(self) -> LayerChain:
        return self  # an exported program runs as exported (eval mode)


class ProgramGraph(_Program):
    """A program whose residual units do not form one chain (a unit inside another's branch, a long
    skip such as U-Net's): what applies is deleting units, each deletion run through the whole graph
    with the deleted units' adds replaced by their shortcut operands (Veit et al. 2016's deletion, as
    :class:`ProgramChain` does it unit by unit). Reordering, repeating and running units in parallel
    need a chain and are refused with ``why`` (the reason the units are not one). No prefix is shared
    between sequences, so every sequence costs one forward of the whole net."""

    MAX_GRAPHS = 64  # graphs kept, one per set of deleted units (a k sweep draws many)

    def __init__(self, ep: ExportedProgram, net: GraphNet | None = None, name: str = "program",
                 why: str = "") -> None:
        super().__init__(ep, net, name)
        order = {n.name: i for i, n in enumerate(self.gm.graph.nodes)}
        self.units: tuple[Unit, ...] = tuple(sorted(self.net.units, key=lambda u: order[u.add_node]))
        if not self.units:
            raise ChainError(f"{self.net.name} has no residual unit to delete")
        self.why = why or f"the residual units of {self.net.name} are not one chain"
        self._graphs: dict[frozenset[int], fx.GraphModule] = {}

    @property
    def n(self) -> int:
        return len(self.units)

    def forward_deleted(self, deleted: frozenset[int], x: Tensor) -> Tensor:
        """The net's output on ``x`` with the units in ``deleted`` deleted (their branches removed)."""
        gm = self._graphs.get(deleted)
        if gm is None:
            gm = self._segment(None, self.output, deleted=[self.units[i] for i in sorted(deleted)])
            if len(self._graphs) >= self.MAX_GRAPHS:
                self._graphs.pop(next(iter(self._graphs)))
            self._graphs[deleted] = gm
        return self._run(gm, x)

    def unit(self, i: int, h: Tensor, keep: bool) -> Tensor:
        """Not a chain: a unit has no input of its own (the engine runs :meth:`forward_deleted`)."""
        raise ChainError(f"{self.why}: its units run only inside the whole net")

    def branch(self, i: int, h: Tensor) -> Tensor:
        raise ChainError(f"{self.why}: its units do not run in parallel")

    def check_sequence(self, seq: Sequence[Step]) -> None:
        """Only deletions: every unit once, in its own place, kept or deleted."""
        if len(seq) != self.n or any(i != p for p, (i, _) in enumerate(seq)):
            raise ChainError(f"{self.why}: deleting units applies to it; reordering, repeating or running "
                             "units in parallel needs units that form one chain")

    def eval(self) -> ProgramGraph:
        return self  # an exported program runs as exported (eval mode)

"""Validated genotype data model and its JSON form (``arnas-zoo/genotype@1``).

A genotype names its op family (``space``) and holds named cell types. A cell is a list of
intermediate nodes; a node is a list of ``[op, input]`` edges whose outputs are summed. Inputs count
the cell's two inputs first (0 = output of the cell before the previous one, 1 = previous cell),
then the intermediate nodes (node k has index k + 2). ``concat`` lists the states whose channels
form the cell output.

The DARTS two-edges-per-node form and RobNet's all-edges form are both instances of this model:

.. code-block:: json

    {"schema": "arnas-zoo/genotype@1", "space": "arnas", "name": "ARNAS",
     "cells": {"accurate": {"nodes": [[["skip_connect", 0], ["skip_connect", 1]], ...],
                            "concat": [2, 3, 4, 5]}, ...}}

Every malformed input raises :class:`~arnas_zoo.errors.GenotypeError` whose message starts with
the JSON path of the offending value and says what was expected and what came.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from arnas_zoo.atomic import atomic_write_text
from arnas_zoo.errors import GenotypeError
from arnas_zoo.primitives import SPACE_OPS

SCHEMA = "arnas-zoo/genotype@1"
#: the genotype's free text: it describes where the cells came from and never changes the network
DESCRIPTIVE_KEYS = ("source", "paper", "notes")
NUM_CELL_INPUTS = 2
#: Bounds on untrusted genotype documents, checked before anything is built.
MAX_CELLS = 1000  # RobNet-free style: one cell type per layer
MAX_NODES = 64
MAX_EDGES_PER_NODE = 64
MAX_NAME_LENGTH = 200
MAX_TEXT_LENGTH = 100_000  # name/source/paper/notes
MAX_JSON_BYTES = 50_000_000
_TOP_KEYS = {"schema", "space", "name", "cells", "source", "paper", "notes"}
_CELL_KEYS = {"nodes", "concat"}

# RobNet's two-bit edge codes (RobNets, Guo et al. 2020) mapped onto the op vocabulary.
ROBNET_CODE_OPS = {
    "00": None,
    "01": "sep_conv_3x3",
    "10": "skip_connect",
    "11": "res_sep_conv_3x3",
}


def _type_name(value: Any) -> str:
    return type(value).__name__


@dataclass(frozen=True)
class Edge:
    """One op applied to one earlier state of the cell."""

    op: str
    input: int

    def to_json(self) -> list[Any]:
        return [self.op, self.input]


@dataclass(frozen=True)
class CellGenotype:
    """A cell: intermediate nodes (each a tuple of edges) and the states that are concatenated."""

    nodes: tuple[tuple[Edge, ...], ...]
    concat: tuple[int, ...]

    @property
    def num_nodes(self) -> int:
        return len(self.nodes)

    @property
    def edges(self) -> list[tuple[int, Edge]]:
        """``(node_state_index, edge)`` pairs in node order."""
        return [(k + NUM_CELL_INPUTS, e) for k, node in enumerate(self.nodes) for e in node]

    def ops(self) -> list[str]:
        return [e.op for node in self.nodes for e in node]

    def to_dict(self) -> dict[str, Any]:
        return {
            "nodes": [[e.to_json() for e in node] for node in self.nodes],
            "concat": list(self.concat),
        }


@dataclass(frozen=True)
class Genotype:
    """A validated genotype. Build it with :meth:`from_dict`, :meth:`load` or a converter."""

    space: str
    cells: Mapping[str, CellGenotype]
    name: str | None = None
    source: str | None = None
    paper: str | None = None
    notes: str | None = None
    schema: str = field(default=SCHEMA, repr=False)

    # ---- construction -------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: Any) -> Genotype:
        if not isinstance(data, Mapping):
            raise GenotypeError(f"$: expected a JSON object, got {_type_name(data)}")
        unknown = sorted(set(map(str, data)) - _TOP_KEYS)
        if unknown:
            raise GenotypeError(f"$.{unknown[0]:.60}: unknown key; expected only {sorted(_TOP_KEYS)}")
        schema = data.get("schema", SCHEMA)
        if schema != SCHEMA:
            raise GenotypeError(f"$.schema: expected {SCHEMA!r}, got {schema!r:.80}")
        space = data.get("space")
        if not isinstance(space, str) or space not in SPACE_OPS:
            raise GenotypeError(f"$.space: expected one of {sorted(SPACE_OPS)}, got {space!r:.60}")
        meta: dict[str, str | None] = {}
        for key in ("name", "source", "paper", "notes"):
            value = data.get(key)
            if value is not None and not isinstance(value, str):
                raise GenotypeError(f"$.{key}: expected a string, got {_type_name(value)}")
            limit = MAX_NAME_LENGTH if key == "name" else MAX_TEXT_LENGTH
            if value is not None and len(value) > limit:
                raise GenotypeError(f"$.{key}: {len(value)} characters exceed the limit of {limit}")
            meta[key] = value
        cells_raw = data.get("cells")
        if not isinstance(cells_raw, Mapping) or not cells_raw:
            raise GenotypeError(f"$.cells: expected a non-empty object of named cells, got {cells_raw!r:.80}")
        if len(cells_raw) > MAX_CELLS:
            raise GenotypeError(f"$.cells: {len(cells_raw)} cell types exceed the limit of {MAX_CELLS}")
        cells: dict[str, CellGenotype] = {}
        for cell_name, cell_raw in cells_raw.items():
            if not isinstance(cell_name, str) or not cell_name or len(cell_name) > MAX_NAME_LENGTH:
                raise GenotypeError(
                    f"$.cells: expected cell names of 1-{MAX_NAME_LENGTH} characters, got {cell_name!r:.80}"
                )
            cells[cell_name] = _parse_cell(cell_raw, f"$.cells.{cell_name}", space)
        return cls(
            space=space, cells=cells, name=meta["name"], source=meta["source"], paper=meta["paper"], notes=meta["notes"]
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> Genotype:
        return cls.from_dict(parse_json(text))

    @classmethod
    def load(cls, path: str | Path) -> Genotype:
        path = Path(path)
        try:
            if path.stat().st_size > MAX_JSON_BYTES:
                raise GenotypeError(f"{path}: file exceeds the limit of {MAX_JSON_BYTES} bytes")
            text = path.read_bytes()
        except OSError as exc:
            raise GenotypeError(f"{path}: cannot read genotype file ({exc.strerror})") from None
        try:
            return cls.from_json(text)
        except GenotypeError as exc:
            raise GenotypeError(f"{path}: {exc}") from None

    # ---- output --------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"schema": SCHEMA, "space": self.space}
        for key in ("name", "source", "paper", "notes"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        out["cells"] = {name: cell.to_dict() for name, cell in self.cells.items()}
        return out

    def to_json(self, compact: bool = False) -> str:
        """JSON text; by default one line per node so that a cell reads top to bottom."""
        if compact:
            return json.dumps(self.to_dict(), separators=(",", ":"))
        data = self.to_dict()
        cells = data.pop("cells")
        head = json.dumps(data, indent=1)[:-2]  # drop the closing brace, keep the last key
        parts = []
        for name, cell in cells.items():
            nodes = ",\n".join("    " + json.dumps(node) for node in cell["nodes"])
            parts.append(
                f'  {json.dumps(name)}: {{\n   "nodes": [\n{nodes}\n   ],\n'
                f'   "concat": {json.dumps(cell["concat"])}\n  }}'
            )
        return head + ',\n "cells": {\n' + ",\n".join(parts) + "\n }\n}"

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, self.to_json() + "\n")
        return path

    def pretty(self) -> str:
        """A short human-readable listing: one line per node."""
        lines = [f"genotype {self.name or '(unnamed)'}  space={self.space}"]
        for cell_name, cell in self.cells.items():
            lines.append(f"  {cell_name}: concat {list(cell.concat)}")
            for k, node in enumerate(cell.nodes):
                srcs = ", ".join(f"{e.op}({_state_name(e.input)})" for e in node)
                lines.append(f"    n{k}: {srcs}")
        return "\n".join(lines)

    def cell(self, name: str) -> CellGenotype:
        try:
            return self.cells[name]
        except KeyError:
            raise GenotypeError(f"$.cells: no cell named {name!r}; this genotype has {sorted(self.cells)}") from None


def parse_json(text: str | bytes) -> Any:
    """``json.loads`` for untrusted documents: size-bounded, and every failure a :class:`GenotypeError`.

    Deeply nested arrays (a RecursionError in the parser) and integers of thousands of digits (a
    ValueError from Python's int-size guard) are malformed input like any other.
    """
    if len(text) > MAX_JSON_BYTES:
        raise GenotypeError(f"$: document of {len(text)} bytes exceeds the limit of {MAX_JSON_BYTES}")
    try:
        return json.loads(text)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:  # JSONDecodeError is a ValueError
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)[:200]
        raise GenotypeError(f"$: malformed JSON ({reason})") from None


def _state_name(index: int) -> str:
    return ("c_{k-2}", "c_{k-1}")[index] if index < NUM_CELL_INPUTS else f"n{index - NUM_CELL_INPUTS}"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _parse_cell(raw: Any, path: str, space: str) -> CellGenotype:
    if not isinstance(raw, Mapping):
        raise GenotypeError(f"{path}: expected an object with keys 'nodes' and 'concat', got {_type_name(raw)}")
    unknown = sorted(set(map(str, raw)) - _CELL_KEYS)
    if unknown:
        raise GenotypeError(f"{path}.{unknown[0]:.60}: unknown key; expected only {sorted(_CELL_KEYS)}")
    nodes_raw = raw.get("nodes")
    if not isinstance(nodes_raw, list) or not nodes_raw:
        raise GenotypeError(f"{path}.nodes: expected a non-empty list of nodes, got {nodes_raw!r:.80}")
    if len(nodes_raw) > MAX_NODES:
        raise GenotypeError(f"{path}.nodes: {len(nodes_raw)} nodes exceed the limit of {MAX_NODES}")
    vocabulary = SPACE_OPS[space]
    nodes: list[tuple[Edge, ...]] = []
    for k, node_raw in enumerate(nodes_raw):
        npath = f"{path}.nodes[{k}]"
        if not isinstance(node_raw, list):
            raise GenotypeError(f"{npath}: expected a list of [op, input] edges, got {_type_name(node_raw)}")
        if not node_raw:
            raise GenotypeError(f"{npath}: empty node; expected at least one [op, input] edge")
        if len(node_raw) > MAX_EDGES_PER_NODE:
            raise GenotypeError(f"{npath}: {len(node_raw)} edges exceed the limit of {MAX_EDGES_PER_NODE}")
        edges = []
        for j, edge_raw in enumerate(node_raw):
            epath = f"{npath}[{j}]"
            if not isinstance(edge_raw, list) or len(edge_raw) != 2:
                raise GenotypeError(f"{epath}: expected an [op, input] pair, got {edge_raw!r:.80}")
            op, src = edge_raw
            if not isinstance(op, str):
                raise GenotypeError(f"{epath}[0]: expected an op name (string), got {_type_name(op)}")
            if op not in vocabulary:
                raise GenotypeError(
                    f"{epath}[0]: unknown op {op!r:.60} for space {space!r}; expected one of {sorted(vocabulary)}"
                )
            if not _is_int(src):
                raise GenotypeError(f"{epath}[1]: expected an integer input index, got {_type_name(src)}")
            limit = k + NUM_CELL_INPUTS
            if not 0 <= src < limit:
                raise GenotypeError(
                    f"{epath}[1]: input {src} out of range; node {k} may read states 0..{limit - 1} "
                    "(0, 1 = cell inputs, 2.. = earlier nodes)"
                )
            edges.append(Edge(op, src))
        nodes.append(tuple(edges))
    concat_raw = raw.get("concat")
    n_states = len(nodes) + NUM_CELL_INPUTS
    if not isinstance(concat_raw, list) or not concat_raw or len(concat_raw) > n_states:
        raise GenotypeError(
            f"{path}.concat: expected a non-empty list of at most {n_states} state indices, got {concat_raw!r:.80}"
        )
    for j, c in enumerate(concat_raw):
        if not _is_int(c):
            raise GenotypeError(f"{path}.concat[{j}]: expected an integer, got {_type_name(c)}")
        if not 0 <= c < n_states:
            raise GenotypeError(f"{path}.concat[{j}]: state {c} out of range; expected 0..{n_states - 1}")
    if len(set(concat_raw)) != len(concat_raw):
        raise GenotypeError(f"{path}.concat: expected distinct state indices, got {concat_raw}")
    return CellGenotype(nodes=tuple(nodes), concat=tuple(concat_raw))


# ---- converters from published formats -------------------------------------------------------
def cell_from_darts_edges(edges: Sequence[Sequence[Any]], concat: Sequence[int]) -> dict[str, Any]:
    """DARTS ``[(op, input), ...]`` with two edges per node -> cell dict of this format."""
    edges = [list(e) for e in edges]
    if len(edges) % 2:
        raise GenotypeError(f"edges: expected two edges per node (an even count), got {len(edges)}")
    return {"nodes": [edges[i : i + 2] for i in range(0, len(edges), 2)], "concat": list(concat)}


def cell_from_robnet_code(codes: Sequence[str], num_nodes: int = 4) -> dict[str, Any]:
    """RobNet's two-bit edge codes over the full DAG (node i has 2 + i edges) -> cell dict."""
    expected = sum(NUM_CELL_INPUTS + i for i in range(num_nodes))
    if len(codes) != expected:
        raise GenotypeError(f"cell_codes: expected {expected} two-bit codes, got {len(codes)}")
    nodes: list[list[list[Any]]] = []
    pos = 0
    for i in range(num_nodes):
        node = []
        for src in range(NUM_CELL_INPUTS + i):
            code = codes[pos]
            pos += 1
            if code not in ROBNET_CODE_OPS:
                raise GenotypeError(f"cell_codes[{pos - 1}]: expected one of {sorted(ROBNET_CODE_OPS)}, got {code!r}")
            op = ROBNET_CODE_OPS[code]
            if op is not None:
                node.append([op, src])
        # a node whose every edge is '00' outputs zeros; keep it explicit rather than empty
        nodes.append(node or [["none", 0]])
    return {"nodes": nodes, "concat": list(range(NUM_CELL_INPUTS, NUM_CELL_INPUTS + num_nodes))}


def from_published(name: str, entry: Mapping[str, Any]) -> Genotype:
    """Convert one entry of ``published_genotypes.json`` (DARTS, ARNAS or RobNet form)."""
    space = entry.get("space")
    meta = {"name": name, "source": entry.get("source"), "paper": entry.get("paper"), "notes": entry.get("note")}
    if "cell_codes" in entry:
        codes = entry["cell_codes"]
        if len(codes) == 1:
            cells = {"shared": cell_from_robnet_code(codes[0])}
        else:
            cells = {f"cell{i}": cell_from_robnet_code(c) for i, c in enumerate(codes)}
    elif isinstance(entry.get("cells"), Mapping) and all(
        isinstance(c, Mapping) and "edges" in c for c in entry["cells"].values()
    ):
        cells = {k: cell_from_darts_edges(c["edges"], c["concat"]) for k, c in entry["cells"].items()}
    else:
        raise GenotypeError(
            f"{name}: unsupported published format (space {space!r}); expected DARTS 'edges' cells "
            "or RobNet 'cell_codes'"
        )
    data = {"space": space, "cells": cells, **{k: v for k, v in meta.items() if v is not None}}
    return Genotype.from_dict(data)


def compare(a: Genotype, b: Genotype) -> dict[str, Any]:
    """How two genotypes differ, cell type by cell type (for cell types both have).

    Per cell: each side's op counts, the op multiset overlap (edges that could be paired by op alone,
    over the larger edge count), the exact edge overlap (the same op from the same input into the same
    node), and each side's share of parameter-free edges. ``only_a`` / ``only_b`` name cell types that
    one side lacks. Nothing here says which cell is better: that takes training both.
    """
    from collections import Counter

    from arnas_zoo.primitives import PARAMETER_FREE_OPS

    cells: dict[str, Any] = {}
    for name in [n for n in a.cells if n in b.cells]:
        ca, cb = a.cells[name], b.cells[name]
        ops_a, ops_b = Counter(ca.ops()), Counter(cb.ops())
        n_a, n_b = sum(ops_a.values()), sum(ops_b.values())
        edges_a = Counter((node, e.op, e.input) for node, e in ca.edges)
        edges_b = Counter((node, e.op, e.input) for node, e in cb.edges)
        denom = max(n_a, n_b) or 1
        cells[name] = {
            "edges": [n_a, n_b],
            "ops_a": dict(sorted(ops_a.items())),
            "ops_b": dict(sorted(ops_b.items())),
            "op_overlap": sum((ops_a & ops_b).values()) / denom,
            "edge_overlap": sum((edges_a & edges_b).values()) / denom,
            "parameter_free": [
                sum(c for op, c in ops.items() if op in PARAMETER_FREE_OPS) / (n or 1)
                for ops, n in ((ops_a, n_a), (ops_b, n_b))
            ],
        }
    return {
        "a": a.name,
        "b": b.name,
        "cells": cells,
        "only_a": [n for n in a.cells if n not in b.cells],
        "only_b": [n for n in b.cells if n not in a.cells],
    }


def random_like(genotype: Genotype, rng: Any) -> Genotype:
    """A random genotype of the same shape: each node keeps its edge count, draws that many distinct earlier
    states as inputs and an op for each from the space's vocabulary (``none`` excluded). ``rng`` is a
    :class:`random.Random`. The chance baseline for :func:`compare`."""
    vocabulary = sorted(SPACE_OPS[genotype.space] - {"none"})
    cells = {}
    for name, cell in genotype.cells.items():
        nodes = []
        for k, node in enumerate(cell.nodes):
            inputs = rng.sample(range(k + NUM_CELL_INPUTS), min(len(node), k + NUM_CELL_INPUTS))
            nodes.append([[rng.choice(vocabulary), i] for i in inputs])
        cells[name] = {"nodes": nodes, "concat": list(cell.concat)}
    return Genotype.from_dict({"schema": SCHEMA, "space": genotype.space, "name": "random", "cells": cells})


def chance_overlap(a: Genotype, b: Genotype, samples: int = 1000, seed: int = 0) -> dict[str, Any]:
    """The op and edge overlap with ``b`` of ``samples`` random genotypes shaped like ``a``: per cell type,
    the mean and the 95th percentile. An overlap above the 95th percentile is more than chance."""
    import random

    rng = random.Random(seed)
    draws: dict[str, dict[str, list[float]]] = {}
    for _ in range(samples):
        for name, c in compare(random_like(a, rng), b)["cells"].items():
            slot = draws.setdefault(name, {"op_overlap": [], "edge_overlap": []})
            slot["op_overlap"].append(c["op_overlap"])
            slot["edge_overlap"].append(c["edge_overlap"])
    out: dict[str, Any] = {"samples": samples, "seed": seed, "cells": {}}
    for name, slot in draws.items():
        out["cells"][name] = {
            key: {"mean": sum(v) / len(v), "p95": sorted(v)[min(len(v) - 1, int(0.95 * len(v)))]}
            for key, v in slot.items()
        }
    return out


def format_comparison(result: Mapping[str, Any]) -> str:
    """:func:`compare`'s result as a short text table."""
    a, b = result["a"] or "A", result["b"] or "B"
    lines = [f"A = {a}", f"B = {b}", "", "cell        edges A/B  same op  same edge  parameter-free A/B"]
    for name, c in result["cells"].items():
        pf_a, pf_b = c["parameter_free"]
        lines.append(
            f"{name:<11} {c['edges'][0]:>4}/{c['edges'][1]:<4} {c['op_overlap']:>7.0%} {c['edge_overlap']:>10.0%}"
            f"  {pf_a:>8.0%} / {pf_b:.0%}"
        )
    chance = result.get("chance")
    if chance:
        lines.append("")
        lines.append(
            f"chance ({chance['samples']} random cells shaped like A, seed {chance['seed']}): "
            "mean / 95th percentile overlap with B"
        )
        for name, c in chance["cells"].items():
            op, edge = c["op_overlap"], c["edge_overlap"]
            lines.append(
                f"{name:<11} {'':>9} {op['mean']:>3.0%}/{op['p95']:<3.0%} {edge['mean']:>6.0%}/{edge['p95']:.0%}"
            )
    for name, c in result["cells"].items():
        lines.append("")
        lines.append(f"{name}:")
        for side in ("a", "b"):
            ops = ", ".join(f"{op} x{k}" for op, k in c[f"ops_{side}"].items())
            lines.append(f"  {side.upper()}: {ops}")
    for side in ("a", "b"):
        if result[f"only_{side}"]:
            lines.append(f"only in {side.upper()}: {', '.join(result[f'only_{side}'])}")
    return "\n".join(lines)

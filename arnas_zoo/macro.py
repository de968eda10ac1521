"""The NSGA-Net macro search space (Lu et al., GECCO 2019; used by RoCo-NAS): phases of conv nodes.

A macro genotype has ``P`` phases (3 in the papers) of ``N`` nodes (up to 6). Each phase is a bit
string of ``N (N - 1) / 2`` connection bits plus one residual bit: bit ``(i, j)`` (node ``i`` before
node ``j``, ordered by ``j`` then ``i``) says that node ``i``'s output feeds node ``j``; the last bit
adds the phase's input node to its output node. Every node is a 3x3 conv-BN-ReLU. In a phase, a node
with no incoming bit takes the input node's output; nodes with no outgoing bit are summed into the
output node; nodes with neither are dropped (Genetic CNN's rule); a phase with no active node is its
input node followed by its output node. Phases are joined by 2x2 max pooling and double the channels.

JSON form (``schema arnas-zoo/macro-genotype@1``)::

    {"schema": "arnas-zoo/macro-genotype@1", "space": "macro", "name": "...", "nodes": 6,
     "phases": ["0101101010101011", "...", "..."]}
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from arnas_zoo.atomic import atomic_write_json
from arnas_zoo.errors import GenotypeError

MACRO_SCHEMA = "arnas-zoo/macro-genotype@1"
MAX_NODES = 12
MAX_PHASES = 8


def bits_per_phase(nodes: int) -> int:
    return nodes * (nodes - 1) // 2 + 1


@dataclass(frozen=True)
class MacroGenotype:
    """``phases``: one bit string per phase (connection bits then the residual bit)."""

    phases: tuple[str, ...]
    nodes: int = 6
    name: str = "macro"
    notes: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.nodes, int) or isinstance(self.nodes, bool) or not 2 <= self.nodes <= MAX_NODES:
            raise GenotypeError(f"nodes: expected an integer in [2, {MAX_NODES}], got {self.nodes!r:.40}")
        if not isinstance(self.phases, tuple) or not 1 <= len(self.phases) <= MAX_PHASES:
            raise GenotypeError(f"phases: expected 1 to {MAX_PHASES} bit strings, got {self.phases!r:.60}")
        want = bits_per_phase(self.nodes)
        for p, bits in enumerate(self.phases):
            if not isinstance(bits, str) or len(bits) != want or set(bits) - {"0", "1"}:
                raise GenotypeError(
                    f"phases[{p}]: expected {want} characters of 0/1 for {self.nodes} nodes, got {str(bits)[:40]!r}"
                )
        if not isinstance(self.name, str) or not 0 < len(self.name) <= 200:
            raise GenotypeError(f"name: expected a string of 1-200 characters, got {self.name!r:.60}")

    # ---- bits ---------------------------------------------------------------------------------------
    @classmethod
    def from_bits(cls, bits: Any, phases: int, nodes: int, name: str = "macro") -> MacroGenotype:
        """A flat 0/1 sequence of ``phases * bits_per_phase(nodes)`` values -> genotype."""
        flat = [int(b) for b in bits]
        per = bits_per_phase(nodes)
        if len(flat) != phases * per:
            raise GenotypeError(f"bits: expected {phases * per} values ({phases} phases x {per}), got {len(flat)}")
        if any(b not in (0, 1) for b in flat):
            raise GenotypeError("bits: expected only 0 and 1")
        strings = tuple("".join(str(b) for b in flat[p * per : (p + 1) * per]) for p in range(phases))
        return cls(strings, nodes, name)

    def bits(self) -> list[int]:
        return [int(c) for phase in self.phases for c in phase]

    def connections(self, phase: int) -> tuple[list[tuple[int, int]], bool]:
        """The (i, j) edges of one phase and its residual bit."""
        bits = self.phases[phase]
        edges, k = [], 0
        for j in range(1, self.nodes):
            for i in range(j):
                if bits[k] == "1":
                    edges.append((i, j))
                k += 1
        return edges, bits[-1] == "1"

    # ---- JSON ---------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "schema": MACRO_SCHEMA,
            "space": "macro",
            "name": self.name,
            "nodes": self.nodes,
            "phases": list(self.phases),
        }
        if self.notes:
            out["notes"] = self.notes
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1) + "\n"

    @classmethod
    def from_dict(cls, data: Any, where: str = "macro genotype") -> MacroGenotype:
        if not isinstance(data, dict):
            raise GenotypeError(f"{where}: expected a JSON object, got {type(data).__name__}")
        if data.get("schema") != MACRO_SCHEMA:
            raise GenotypeError(f"{where}: expected schema {MACRO_SCHEMA!r}, got {str(data.get('schema'))[:60]!r}")
        unknown = sorted(set(data) - {"schema", "space", "name", "nodes", "phases", "notes"})
        if unknown:
            raise GenotypeError(f"{where}: unknown keys {unknown[:5]}")
        phases = data.get("phases")
        if not isinstance(phases, list):
            raise GenotypeError(f"{where}: phases: expected a list of bit strings")
        notes = data.get("notes")
        return cls(tuple(phases), data.get("nodes", 6), data.get("name", "macro"), notes if notes else None)

    @classmethod
    def load(cls, path: str | Path) -> MacroGenotype:
        text = Path(path).read_text()
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise GenotypeError(f"{path}: not JSON ({exc.msg} at line {exc.lineno})") from None
        return cls.from_dict(data, str(path))

    def save(self, path: str | Path) -> Path:

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, self.to_dict())
        return path


def is_macro_json(data: Any) -> bool:
    return isinstance(data, dict) and data.get("schema") == MACRO_SCHEMA


def macro_config(genotype: MacroGenotype, **overrides: Any) -> Any:
    """The ModelConfig of a macro network (arch ``macro``; the genotype travels in ``extra``)."""
    from arnas_zoo.config import ModelConfig

    fields: dict[str, Any] = {
        "arch": "macro",
        "init_channels": 16,
        "layers": len(genotype.phases),
        "auxiliary": False,
        "name": genotype.name,
        "extra": {"macro_genotype": genotype.to_dict()},
    }
    fields.update(overrides)
    return ModelConfig(**fields)

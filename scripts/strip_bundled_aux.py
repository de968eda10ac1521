"""Strip the auxiliary head (training only) from every bundled zoo checkpoint that still has one, re-pin.

    python scripts/strip_bundled_aux.py

The head never runs in evaluation, attacks or export, but at the zoo's reduced sizes it is most of a
cell network's weights (about 1.6 of 1.7 MB): stripping keeps the wheel light. Logits are unchanged,
so every card figure stands; the registry's sha256 pins of the weights and config are recomputed
(nothing else in an entry changes) and ``MODEL_CARD.md`` is regenerated. Idempotent.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
INDEX = REPO / "arnas_zoo" / "pretrained" / "index.json"


def main() -> int:
    from arnas_zoo.checkpoint import strip_auxiliary_head
    from arnas_zoo.pretrained import index_entry, read_index, write_index
    from export.card import render_zoo_card

    entries = []
    for entry in read_index(INDEX):
        if entry.folder is not None:
            folder = INDEX.parent / entry.folder
            removed = strip_auxiliary_head(folder)
            if removed:
                pins = index_entry(folder, entry.name)
                entry = replace(entry, sha256=pins.sha256, config_sha256=pins.config_sha256)
                print(f"{entry.name}: removed {removed:,} auxiliary-head parameters")
        entries.append(entry)
    write_index(INDEX, entries)
    (REPO / "MODEL_CARD.md").write_text(render_zoo_card(read_index(INDEX)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

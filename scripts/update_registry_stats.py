"""Recount every registry architecture and rewrite arnas_zoo/registry_stats.json (run after adding one).

python scripts/update_registry_stats.py          # rewrite
python scripts/update_registry_stats.py --check  # exit 1 if the stored counts are stale
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from arnas_zoo.introspect import STATS_FILE, compute_stats
from arnas_zoo.registry import list_archs, normalize_name

PATH = Path(__file__).resolve().parents[1] / "arnas_zoo" / STATS_FILE


def main() -> int:
    counts = {normalize_name(spec.name): compute_stats(spec.config) for spec in list_archs()}
    text = json.dumps(counts, indent=1, sort_keys=True) + "\n"
    if "--check" in sys.argv:
        same = PATH.is_file() and PATH.read_text() == text
        print(f"{PATH}: {'up to date' if same else 'STALE: run scripts/update_registry_stats.py'}")
        return 0 if same else 1
    PATH.write_text(text)
    print(f"wrote {PATH} ({len(counts)} architectures)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Where the test suite keeps what it makes outside pytest's tmp folders."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# The fault scenarios append their figures here (docs/reliability.md's tables come from it).
RELIABILITY_FIGURES = ROOT / ".local" / "reliability-figures.jsonl"

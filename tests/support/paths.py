"""Where the test suite keeps what it makes outside pytest's tmp folders."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# PostgreSQL runs as the `postgres` OS user, which cannot enter pytest's private tmp dirs.
FAULTS_HOME = ROOT / ".local" / "faults"

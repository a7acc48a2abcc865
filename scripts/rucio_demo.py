"""Run the demo campaign in Rucio's conveyor mode on this machine (used by scripts/demo-rucio.sh).

Starts what a site would run, all on 127.0.0.1: PostgreSQL, a Rucio 41 server, Rucio's judge,
conveyor and necromancer daemons, and the FTS3 server the tests use (the small fake that really copies
and checks adler32); writes a [replication] file for them and runs `drp demo --replication FILE`.
Everything is stopped at the end. Needs `make test`'s Rucio server venv (.venv-rucio).

    .venv/bin/python scripts/rucio_demo.py [--small] [--workdir drp-work-rucio]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.rucio_server import conveyor_stack, replication_settings, stack_available  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--small", action="store_true", help="the 2-tract demo release")
    ap.add_argument("--workdir", type=Path, default=Path("drp-work-rucio"))
    args = ap.parse_args()
    if not stack_available():
        print("rucio_demo: needs PostgreSQL and the Rucio server venv: run `make test` once", file=sys.stderr)
        return 2
    tag = uuid.uuid4().hex[:6]
    with tempfile.TemporaryDirectory(prefix="drp-rucio-") as tmp:
        base = Path(tmp)
        with conveyor_stack(base) as (server, conveyor):
            settings = base / "rucio.toml"
            table = replication_settings(server, f"_{tag.upper()}", conveyor)
            settings.write_text("[replication]\n" + "".join(f'{k} = "{v}"\n' for k, v in table.items()))
            print(
                f"rucio_demo: Rucio at {server.url}, FTS3 at {conveyor.fts_url}, daemons running", flush=True
            )
            command = [str(Path(sys.executable).parent / "drp"), "demo", "--workdir", str(args.workdir)]
            command += ["--replication", str(settings), "--release", f"dr{tag}"]
            command += ["--small"] if args.small else []
            with conveyor.running():
                return subprocess.call(command)


if __name__ == "__main__":
    sys.exit(main())

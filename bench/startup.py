"""Start-up benchmark (issue 16): what cron and shells run all day must start fast.

Times, as separate processes, ``python -c pass`` (the baseline, same interpreter, same run),
``drp --help``, ``drp campaign status NAME --json`` and ``drp campaign tick CAMPAIGN_TOML`` on a
finished campaign. The campaign is the small demo, run once into ``--workdir`` (kept, and reused
when it is there). Commands run interleaved, ``--repeat`` times each; the median is reported.
Targets: ``drp --help`` < 0.3 s, ``campaign status --json`` < 0.6 s (``ratio_to_target=``).
With ``--importtime COMMAND`` it prints the slowest imports of that command instead
(``python -X importtime``), to find the culprits.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGETS = {"help": 0.3, "status": 0.6}


def _drp() -> list[str]:
    return [sys.executable, "-c", "from cli import main; main()"]


def ensure_campaign(workdir: Path) -> None:
    if (workdir / "drp.sqlite").exists() and (workdir / "campaign.toml").exists():
        return
    print(f"# running the small demo into {workdir} (once)", file=sys.stderr)
    subprocess.run(
        [*_drp(), "--log-level", "warning", "demo", "--small", "--workdir", str(workdir), "--json"],
        check=True,
        stdout=subprocess.DEVNULL,
    )


def commands(workdir: Path) -> dict[str, list[str]]:
    db = ["--db", f"sqlite:///{workdir / 'drp.sqlite'}"]
    return {
        "baseline": [sys.executable, "-c", "pass"],
        "help": [*_drp(), "--help"],
        "status": [*_drp(), *db, "campaign", "status", "demo", "--json"],
        "tick": [*_drp(), *db, "campaign", "tick", str(workdir / "campaign.toml"), "--json"],
    }


def timed(cmd: list[str], cwd: Path) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} exited {proc.returncode}: {proc.stderr.decode()[-500:]}")
    return elapsed


def importtime(cmd: list[str], cwd: Path, top: int) -> None:
    proc = subprocess.run(
        [cmd[0], "-X", "importtime", *cmd[1:]], cwd=cwd, capture_output=True, text=True, check=False
    )
    rows = []
    for line in proc.stderr.splitlines():
        parts = [p.strip() for p in line.removeprefix("import time:").split("|")]
        if len(parts) == 3 and parts[0].isdigit():
            rows.append((int(parts[1]), int(parts[0]), parts[2]))
    for cum, own, name in sorted(rows, reverse=True)[:top]:
        print(f"{cum / 1000:8.1f} ms cumulative {own / 1000:7.1f} ms self  {name}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", type=Path, default=None, help="demo workdir (default: a temporary one)")
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--importtime", choices=["help", "status", "tick"], default=None)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    repo = Path(__file__).resolve().parent.parent
    os.environ["PYTHONPATH"] = f"{repo}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"
    with tempfile.TemporaryDirectory(prefix="drp-bench-startup-") as tmp:
        workdir = (args.workdir or Path(tmp) / "demo").resolve()
        ensure_campaign(workdir)
        cmds = commands(workdir)
        if args.importtime:
            importtime(cmds[args.importtime], workdir, 30)
            return
        for cmd in cmds.values():  # warm the page cache and the bytecode caches
            timed(cmd, workdir)
        samples: dict[str, list[float]] = {name: [] for name in cmds}
        for _ in range(args.repeat):
            for name, cmd in cmds.items():
                samples[name].append(timed(cmd, workdir))
    medians = {name: statistics.median(s) for name, s in samples.items()}
    base = medians["baseline"]
    result = {
        name: {
            "median_s": round(m, 4),
            "min_s": round(min(samples[name]), 4),
            "ratio_to_baseline": round(m / base, 2),
            **({"ratio_to_target": round(m / TARGETS[name], 2)} if name in TARGETS else {}),
        }
        for name, m in medians.items()
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    for name, r in result.items():
        extra = f" ratio_to_target={r['ratio_to_target']}" if "ratio_to_target" in r else ""
        print(
            f"{name:9s} median={r['median_s']:.3f}s min={r['min_s']:.3f}s "
            f"ratio_to_baseline={r['ratio_to_baseline']}{extra}"
        )


if __name__ == "__main__":
    main()

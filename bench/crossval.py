"""Cross-validation detection thresholds: the smallest fault of each kind that validation catches, and
the detection probability against fault size for zero point and shift.

Processes the tiny release's overlap tract with the real pipeline at site ``a``, then for every fault
of tests/fault_injection.py and a falling ladder of sizes, injects it into a copy (site ``b``) and
runs the comparison:

- ``identical`` mode (the default: same code, same inputs): deterministic, so each fault has one
  threshold, the smallest size on the ladder that fails validation, and the check that caught it;
- ``independent`` mode: site ``b`` is the same sky processed from other noise (``noise_seed``), K
  times; prints the clean false-alarm count and, for zero point and shift, the fraction of the K
  comparisons that fail at each size (the detection curve).

Baseline (same run): the fixed limits the validation used before (5 mmag bias, 50 mas rms), i.e. the
sizes they let through, printed as ``ratio=`` old threshold / new threshold.

    python bench/crossval.py [--seeds K]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from science.pipeline.jobs import ReleaseContext
from science.thresholds import ValidationSection
from tests.fault_injection import FAULTS, TINY, compare, copy_site, failed_checks, inject, process

RELEASE = TINY
LADDERS: dict[str, list[float]] = {
    "zero_point": [1e-2, 3e-3, 1e-3, 3e-4, 1e-4, 3e-5, 1e-5, 3e-6, 1e-6, 3e-7],
    "shift": [100, 30, 10, 3, 1, 0.3, 0.1, 0.03, 0.01, 0.003],
    "wcs_shift": [10, 3, 1, 0.3, 0.1, 0.03],
    "psf_width": [0.1, 0.03, 0.01, 3e-3, 1e-3, 3e-4, 1e-4, 3e-5],
    "added_noise": [1.0, 0.3, 0.1, 0.03, 0.01, 3e-3, 1e-3, 3e-4],
    "corrupted_pixels": [10, 3, 1],
    "dropped_visit": [1],
    "missing_band": [1],
    "missing_patch": [1],
}
CURVES: dict[str, list[float]] = {
    "zero_point": [1e-2, 7e-3, 5e-3, 3e-3, 2e-3, 1e-3],
    "shift": [20, 10, 5, 3, 2, 1],
}
OLD_LIMITS = {"zero_point": 10 ** (5.0 / 2500) - 1, "shift": 0.05 * 1000 * 2**0.5}  # 5 mmag; 50 mas rms


def _caught(
    ctx: ReleaseContext, base: Path, work: Path, fault: str, size: float, cfg: ValidationSection
) -> set[str]:
    b = copy_site(base, work)
    inject(ReleaseContext(b, RELEASE.name), fault, size, seed=1)
    return failed_checks(compare(ctx, b, cfg))


def identical(ctx: ReleaseContext, tmp: Path) -> dict[str, tuple[float, str]]:
    cfg = ValidationSection()
    out: dict[str, tuple[float, str]] = {}
    print(f"{'fault':18} {'unit':28} {'smallest caught':>15}  caught by")
    for fault, ladder in LADDERS.items():
        smallest, by = float("nan"), "never"
        for size in ladder:
            failed = _caught(ctx, ctx.root, tmp / "b", fault, size, cfg)
            if not failed:
                break
            smallest, by = size, ", ".join(sorted(failed)[:3])
        out[fault] = (smallest, by)
        print(f"{fault:18} {FAULTS[fault].unit:28} {smallest:>15.3g}  {by}")
    return out


def independent(ctx: ReleaseContext, tmp: Path, seeds: int) -> None:
    cfg = ValidationSection(mode="independent")
    sites = []
    for k in range(seeds):
        root = tmp / f"noise{k}"
        process(root, RELEASE.model_copy(update={"noise_seed": 1000 + k}))
        sites.append(root)
    clean = [failed_checks(compare(ctx, root, cfg)) for root in sites]
    alarms = sum(bool(f) for f in clean)
    print(f"\nindependent mode, {seeds} noise seeds: clean comparisons failing {alarms}/{seeds}")
    for f in clean:
        if f:
            print(f"  clean failure: {', '.join(sorted(f))}")
    for fault, sizes in CURVES.items():
        print(f"detection probability, {fault} ({FAULTS[fault].unit}):")
        for size in sizes:
            hits = sum(
                bool(_caught(ctx, root, tmp / "b", fault, size, cfg) - clean[k])
                for k, root in enumerate(sites)
            )
            print(f"  {size:>8.3g}: {hits}/{seeds}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=6, help="noise realisations for the independent mode")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-crossval-") as d:
        tmp = Path(d)
        t0 = time.perf_counter()
        ctx = process(tmp / "a", RELEASE)
        print(f"processed tract 0 of {RELEASE.name} in {time.perf_counter() - t0:.1f} s\n")
        table = identical(ctx, tmp)
        for fault, old in OLD_LIMITS.items():
            new = table[fault][0]
            print(f"{fault}: the old fixed limits let through {old:.3g}, caught now from {new:.3g}: ", end="")
            print(f"ratio={old / new:.3g}")
        if args.seeds:
            independent(ctx, tmp, args.seeds)


if __name__ == "__main__":
    main()

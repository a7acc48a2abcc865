"""Faults injected into one site's processed outputs of an overlap tract, for the cross-validation's
fault suite (tests/test_fault_injection.py) and its detection curves (bench/crossval.py).

A site is a storage root holding a release processed by the real pipeline. ``inject`` changes that
site's outputs the way a broken site would have produced them: the catalogue and the coadds agree
with each other (a zero point scales both, a shift moves both), and a dropped visit re-runs the
coadd and measurement without it.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from science.crossval import TractComparison, compare_tract
from science.files import write_fits_atomic
from science.pipeline.coadd import coadd
from science.pipeline.common import read_exposure
from science.pipeline.jobs import Job, ReleaseContext, run_job
from science.synth import ReleaseConfig, generate_release
from science.thresholds import ValidationSection

TRACT = 0
BAND = "r"
# the small release the pipeline tests process (2 tracts, g and r, 2 visits per band)
TINY = ReleaseConfig(
    name="tiny",
    seed=7,
    skymap=ReleaseConfig().skymap.model_copy(update={"tracts_x": 2, "tracts_y": 1}),
    bands=("g", "r"),
    visits_per_band=2,
    image_pix=900,
)


@dataclass(frozen=True)
class Fault:
    name: str
    unit: str
    catches: frozenset[str]  # the checks designed to see it (quantity[band] or quantity): one must fail


FAULTS = {
    f.name: f
    for f in (
        Fault(
            "zero_point",
            "fractional flux",
            frozenset({f"flux_offset[{BAND}]", f"flux_bias_mmag[{BAND}]", f"coadd_pull_max[{BAND}]"}),
        ),
        Fault("shift", "mas in Dec", frozenset({"position_offset"})),
        Fault("wcs_shift", "mas in the coadd WCS only", frozenset({f"coadd_wcs_mas[{BAND}]"})),
        Fault("psf_width", "fractional PSF sigma", frozenset({f"coadd_psf[{BAND}]"})),
        Fault(
            "added_noise",
            "sigma per pixel",
            frozenset({f"coadd_pull_rms[{BAND}]", f"coadd_pull_max[{BAND}]"}),
        ),
        Fault("corrupted_pixels", "pixels set to 100 sigma", frozenset({f"coadd_pull_max[{BAND}]"})),
        Fault("dropped_visit", "visits", frozenset({f"coadd_pull_rms[{BAND}]"})),
        Fault("missing_band", "bands", frozenset({f"columns[{BAND}]", f"coadd_pull_rms[{BAND}]"})),
        Fault("missing_patch", "patches", frozenset({"match_fraction", f"coadd_pull_rms[{BAND}]"})),
    )
}


def process(root: Path, cfg: ReleaseConfig, tracts: set[int] | None = None) -> ReleaseContext:
    """Generate the release under ``root`` and run every job of ``tracts`` in this process."""
    generate_release(cfg, root)
    ctx = ReleaseContext(root, cfg.name)
    for job in ctx.jobs({TRACT} if tracts is None else tracts):
        run_job(ctx, job)
    return ctx


def copy_site(src: Path, dst: Path) -> Path:
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst)
    return dst


def compare(ctx_a: ReleaseContext, root_b: Path, cfg: ValidationSection) -> TractComparison:
    tract = ctx_a.skymap.tract(TRACT)
    return compare_tract(
        (ctx_a.root, root_b),
        ("a", "b"),
        ctx_a.layout.release,
        TRACT,
        [p.index for p in tract.patches],
        ctx_a.bands,
        cfg,
    )


def failed_checks(result: TractComparison) -> set[str]:
    return {c.name for c in result.checks if not c.passed}


def _coadds(ctx: ReleaseContext, band: str) -> list[Path]:
    tract = ctx.skymap.tract(TRACT)
    return [
        p for p in (ctx.root / ctx.layout.coadd(TRACT, q.index, band) for q in tract.patches) if p.is_file()
    ]


def _edit_table(path: Path, t: pa.Table, edit: dict[str, np.ndarray]) -> None:
    for name, values in edit.items():
        t = t.set_column(t.column_names.index(name), name, pa.array(values))
    pq.write_table(t, path)


def inject(ctx: ReleaseContext, fault: str, size: float, seed: int = 0) -> None:
    """Apply ``fault`` of ``size`` (in the fault's unit) to the site ``ctx.root``."""
    rng = np.random.default_rng(seed)
    L = ctx.layout
    table_path = ctx.root / L.object_table(TRACT)
    t = pq.read_table(table_path)
    if fault == "zero_point":
        cols = [c for c in t.column_names if c.startswith(f"{BAND}_") and c.endswith(("Flux", "FluxErr"))]
        _edit_table(table_path, t, {c: np.asarray(t[c]) * (1 + size) for c in cols})
        for path in _coadds(ctx, BAND):
            e = read_exposure(path)
            e.image[:] *= 1 + size
            e.variance[:] *= (1 + size) ** 2
            write_fits_atomic(path, e.hdus())
    elif fault in ("shift", "wcs_shift"):
        if fault == "shift":
            _edit_table(table_path, t, {"dec": np.asarray(t["dec"]) + size / 3.6e6})
        for band in ctx.bands if fault == "shift" else (BAND,):
            for path in _coadds(ctx, band):
                e = read_exposure(path)
                e.wcs.wcs.crval[1] += size / 3.6e6  # the same pixels now sit `size` further north
                write_fits_atomic(path, e.hdus())
    elif fault == "psf_width":
        for path in _coadds(ctx, BAND):
            e = read_exposure(path)
            for k in range(1, int(e.header["PSFNCOMP"]) + 1):
                e.header[f"PSFSIG{k}"] *= 1 + size
                for key in (f"PSFSGX{k}", f"PSFSGY{k}"):
                    if key in e.header:
                        e.header[key] *= 1 + size
            e.header["PSF_FWHM"] *= 1 + size
            write_fits_atomic(path, e.hdus())
    elif fault in ("added_noise", "corrupted_pixels"):
        for path in _coadds(ctx, BAND):
            e = read_exposure(path)
            ratio = float(e.header.get("VARRATIO", 1.0))
            good = np.isfinite(e.variance) & (e.variance > 0)
            sigma = np.sqrt(np.where(good, e.variance * ratio, 0.0))
            if fault == "added_noise":
                e.image[good] += (size * sigma * rng.standard_normal(e.image.shape))[good]
            else:
                idx = rng.choice(np.flatnonzero(good), int(size), replace=False)
                e.image.flat[idx] += 100.0 * sigma.flat[idx]
            write_fits_atomic(path, e.hdus())
            if fault == "corrupted_pixels":
                break  # a few pixels of one coadd
    elif fault == "dropped_visit":
        tract = ctx.skymap.tract(TRACT)
        dropped = ctx.visits_on(TRACT, tract.patches[0].index, BAND)[0]
        for patch in tract.patches:
            visits = [v for v in ctx.visits_on(TRACT, patch.index, BAND) if v != dropped]
            if visits:
                warps = [ctx.root / L.warp(TRACT, patch.index, BAND, v) for v in visits]
                coadd(warps, patch, BAND, ctx.root / L.coadd(TRACT, patch.index, BAND))
        for job in ctx.jobs({TRACT}, steps=("measure", "merge")):
            run_job(ctx, job)
    elif fault == "missing_band":
        pq.write_table(t.drop_columns([c for c in t.column_names if c.startswith(f"{BAND}_")]), table_path)
        for path in _coadds(ctx, BAND):
            path.unlink()
    elif fault == "missing_patch":
        gone = ctx.skymap.tract(TRACT).patches[1].index
        pq.write_table(t.filter(pc.not_equal(t["patch"], gone)), table_path)
        for band in ctx.bands:
            (ctx.root / L.coadd(TRACT, gone, band)).unlink(missing_ok=True)
    else:
        raise ValueError(f"unknown fault {fault!r}")


def job_count(ctx: ReleaseContext) -> int:
    return sum(1 for _ in ctx.jobs({TRACT}))


__all__ = ["FAULTS", "TINY", "Job", "compare", "copy_site", "failed_checks", "inject", "job_count", "process"]

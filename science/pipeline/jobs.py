"""Pipeline jobs: the data ids of each step, their input and output paths, and running one job.

``drp jobs run STEP --data-id JSON --root SITE_ROOT`` is the single command every compute back-end
runs; everything a job needs is derived here from the release manifest under the site root, so a
job's command line is short and the same at every site.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from common.errors import InvalidInputError
from science.layout import Layout
from science.skymap import SkyMap
from science.synth import ReleaseConfig, load_manifest

# Step name -> the keys of its data id, in DAG order.
STEPS: dict[str, tuple[str, ...]] = {
    "calibrate": ("visit",),
    "warp": ("visit", "tract", "patch"),
    "coadd": ("tract", "patch", "band"),
    "measure": ("tract", "patch"),
    "merge": ("tract",),
}

_SHORT = {"visit": "v", "tract": "t", "patch": "p", "band": "b"}
# Step -> the format of its job names (``warp_v001012_t2_p3``), built once from STEPS and _SHORT.
_NAME_FORMAT = {
    step: "_".join([step, *("v{visit:06d}" if k == "visit" else f"{_SHORT[k]}{{{k}}}" for k in keys)])
    for step, keys in STEPS.items()
}


@dataclass(frozen=True)
class Job:
    step: str
    data_id: dict[str, Any]

    @property
    def name(self) -> str:
        """A stable, filesystem- and DAGMan-safe job name, e.g. ``warp_v001012_t2_p3``."""
        return job_name(self.step, self.data_id)

    def data_id_json(self) -> str:
        return json.dumps(self.data_id, sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_name(cls, name: str) -> Job:
        """The job a :attr:`name` stands for (names carry the whole data id, so batch systems need
        pass only the name: no JSON quoting through DAG and submit files)."""
        step, *parts = name.split("_")
        keys = STEPS.get(step)
        if keys is None or len(parts) != len(keys):
            raise InvalidInputError(f"job name {name!r}: expected {step}_<{'>_<'.join(keys or ('…',))}>")
        data_id: dict[str, Any] = {}
        for key, part in zip(keys, parts, strict=True):
            prefix, value = _SHORT[key], part[1:]
            if not part.startswith(prefix) or not value:
                raise InvalidInputError(f"job name {name!r}: {part!r} is not a {key}")
            if key == "band":
                data_id[key] = value
            elif value.isdigit():
                data_id[key] = int(value)
            else:
                raise InvalidInputError(f"job name {name!r}: {key} {value!r} is not a number")
        return cls(step, data_id)


def job_name(step: str, data_id: dict[str, Any]) -> str:
    """The name of the job (``warp_v001012_t2_p3``): what bookkeeping's job queries name rows with."""
    return _NAME_FORMAT[step].format_map(data_id)


@dataclass(frozen=True)
class JobResult:
    step: str
    data_id: dict[str, Any]
    outputs: list[str]
    seconds: float
    detail: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class ReleaseContext:
    """A release as seen from one site root: manifest, sky map, layout, visit index."""

    def __init__(self, root: Path, release: str, manifest: dict[str, Any] | None = None) -> None:
        self.root = root
        self.layout = Layout(release)
        self.manifest = load_manifest(root, release) if manifest is None else manifest
        try:
            self.config = ReleaseConfig.model_validate(self.manifest["config"])
        except (KeyError, ValueError) as err:
            raise InvalidInputError(
                f"{root / self.layout.manifest()}: invalid release config ({err})"
            ) from err
        self.visits: dict[int, dict[str, Any]] = {int(v["visit"]): v for v in self.manifest["visits"]}

    @classmethod
    def discover(cls, root: Path, release: str | None) -> ReleaseContext:
        """Open ``release`` under ``root``, or the only release there if none is named."""
        if release is None:
            found = sorted(p.parent.name for p in root.glob("*/release.json"))
            if len(found) != 1:
                raise InvalidInputError(
                    f"{root}: {'no release' if not found else 'several releases ' + ', '.join(found)} "
                    "found; name one with --release"
                )
            release = found[0]
        return cls(root, release)

    @cached_property
    def skymap(self) -> SkyMap:
        return SkyMap(self.config.skymap)

    @property
    def bands(self) -> tuple[str, ...]:
        return self.config.bands

    @cached_property
    def _visit_index(self) -> dict[tuple[int, int, str], list[int]]:
        """(tract, patch, band) -> sorted visits overlapping it; built once, so lookups are O(1)."""
        index: dict[tuple[int, int, str], list[int]] = {}
        for vid in sorted(self.visits):
            v = self.visits[vid]
            for t, p in v["patches"]:
                index.setdefault((t, p, v["band"]), []).append(vid)
        return index

    def visits_on(self, tract: int, patch: int, band: str | None = None) -> list[int]:
        if band is not None:
            return list(self._visit_index.get((tract, patch, band), ()))
        return sorted(v for b in self.bands for v in self._visit_index.get((tract, patch, b), ()))

    # -- data ids -------------------------------------------------------------------------------
    def check(self, step: str, data_id: dict[str, Any]) -> Job:
        """Validate a data id against the step and the release; unknown ids are an input error."""
        if step not in STEPS:
            raise InvalidInputError(f"unknown step {step!r}; steps: {', '.join(STEPS)}")
        keys = STEPS[step]
        if set(data_id) != set(keys):
            raise InvalidInputError(f"{step}: data id needs exactly {list(keys)}, got {sorted(data_id)}")
        for k in keys:
            v = data_id[k]
            if k == "band":
                if v not in self.bands:
                    raise InvalidInputError(f"{step}: band {v!r} not in release bands {list(self.bands)}")
            elif not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise InvalidInputError(f"{step}: {k} {v!r} must be a non-negative integer")
        if "visit" in data_id and data_id["visit"] not in self.visits:
            raise InvalidInputError(
                f"{step}: visit {data_id['visit']} is not in release {self.layout.release}"
            )
        if "tract" in data_id:
            try:
                tract = self.skymap.tract(data_id["tract"])
                if "patch" in data_id:
                    tract.patch(data_id["patch"])
            except KeyError as err:
                raise InvalidInputError(f"{step}: {err.args[0]}") from err
        if step == "warp":
            tp = [data_id["tract"], data_id["patch"]]
            if tp not in self.visits[data_id["visit"]]["patches"]:
                raise InvalidInputError(
                    f"warp: visit {data_id['visit']} does not overlap tract {tp[0]} patch {tp[1]}"
                )
        if step == "coadd" and not self.visits_on(data_id["tract"], data_id["patch"], data_id["band"]):
            raise InvalidInputError(f"coadd: no {data_id['band']} visits overlap tract/patch {data_id}")
        return Job(step, dict(sorted(data_id.items(), key=lambda kv: keys.index(kv[0]))))

    def io(self, job: Job) -> tuple[list[Path], list[Path]]:
        """Input and output paths of a job, relative to the site root."""
        ins, outs = self.io_names(job)
        return [Path(p) for p in ins], [Path(p) for p in outs]

    def io_names(self, job: Job) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """:meth:`io` as strings (what a DAG stores)."""
        L, d = self.layout, job.data_id
        if job.step == "calibrate":
            band = self.visits[d["visit"]]["band"]
            return (L.raw_name(band, d["visit"]), L.refcat_name()), (
                L.calexp_name(band, d["visit"]),
                L.src_name(band, d["visit"]),
            )
        if job.step == "warp":
            band = self.visits[d["visit"]]["band"]
            return (L.calexp_name(band, d["visit"]),), (
                L.warp_name(d["tract"], d["patch"], band, d["visit"]),
            )
        if job.step == "coadd":
            ins = tuple(
                L.warp_name(d["tract"], d["patch"], d["band"], v)
                for v in self.visits_on(d["tract"], d["patch"], d["band"])
            )
            return ins, (L.coadd_name(d["tract"], d["patch"], d["band"]),)
        if job.step == "measure":
            return tuple(
                L.coadd_name(d["tract"], d["patch"], b)
                for b in self.bands
                if self.visits_on(d["tract"], d["patch"], b)
            ), (L.object_name(d["tract"], d["patch"]),)
        tract = self.skymap.tract(d["tract"])
        return tuple(L.object_name(d["tract"], p.index) for p in tract.patches), (
            L.object_table_name(d["tract"]),
        )

    def jobs(self, tracts: set[int] | None = None, steps: tuple[str, ...] = tuple(STEPS)) -> Iterator[Job]:
        """Every job of the release (or of some tracts), step by step: a valid execution order.

        A visit belongs to the selection when it overlaps one of the tracts (its calibrate is needed
        by their warps); generated lazily so that callers can stream millions of jobs.
        """

        def wanted(t: int) -> bool:
            return tracts is None or t in tracts

        visits = sorted(self.visits)
        for step in steps:
            if step == "calibrate":
                for vid in visits:
                    if any(wanted(t) for t, _ in self.visits[vid]["patches"]):
                        yield Job("calibrate", {"visit": vid})
            elif step == "warp":
                for vid in visits:
                    for t, p in self.visits[vid]["patches"]:
                        if wanted(t):
                            yield Job("warp", {"visit": vid, "tract": t, "patch": p})
            else:
                for tract in self.skymap.tracts:
                    if not wanted(tract.id):
                        continue
                    if step == "merge":
                        yield Job("merge", {"tract": tract.id})
                        continue
                    for patch in tract.patches:
                        if step == "measure":
                            yield Job("measure", {"tract": tract.id, "patch": patch.index})
                        else:
                            for band in self.bands:
                                if self.visits_on(tract.id, patch.index, band):
                                    yield Job(
                                        "coadd", {"tract": tract.id, "patch": patch.index, "band": band}
                                    )


def parse_data_id(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise InvalidInputError(f"--data-id: not valid JSON ({err.msg}): {text!r}") from err
    if not isinstance(value, dict):
        raise InvalidInputError(
            f"--data-id: must be a JSON object such as '{{\"visit\": 1000}}', got {text!r}"
        )
    return value


def run_job(ctx: ReleaseContext, job: Job) -> JobResult:
    """Run one job in this process. Inputs are checked to exist first; outputs appear atomically."""
    from science.pipeline.calibrate import calibrate
    from science.pipeline.coadd import coadd
    from science.pipeline.measure import measure
    from science.pipeline.merge import merge
    from science.pipeline.warp import warp

    inputs, outputs = ctx.io(job)
    root = ctx.root
    for p in inputs:
        if not (root / p).is_file():
            raise InvalidInputError(f"{root / p}: input file not found ({job.name})")
    d = job.data_id
    start = time.perf_counter()
    result: Any
    if job.step == "calibrate":
        result = calibrate(root / inputs[0], root / inputs[1], root / outputs[0], root / outputs[1])
    elif job.step == "warp":
        patch = ctx.skymap.tract(d["tract"]).patch(d["patch"])
        result = warp(root / inputs[0], patch, root / outputs[0])
    elif job.step == "coadd":
        patch = ctx.skymap.tract(d["tract"]).patch(d["patch"])
        result = coadd([root / p for p in inputs], patch, d["band"], root / outputs[0])
    elif job.step == "measure":
        tract = ctx.skymap.tract(d["tract"])
        bands = [b for b in ctx.bands if ctx.visits_on(d["tract"], d["patch"], b)]
        result = measure(
            {b: root / p for b, p in zip(bands, inputs, strict=True)},
            tract,
            tract.patch(d["patch"]),
            root / outputs[0],
        )
    else:
        result = merge([root / p for p in inputs], ctx.skymap.tract(d["tract"]), root / outputs[0])
    return JobResult(job.step, d, [str(p) for p in outputs], time.perf_counter() - start, asdict(result))


def job_main(ctx: ReleaseContext, name: str) -> int:
    """Run the job called ``name`` as a worker does: result JSON on stdout, one error line on stderr,
    the error's exit code (2 for bad input, which no retry can fix). Other exceptions propagate."""
    import sys

    from common.errors import DrpError

    try:
        job = Job.from_name(name)
        result = run_job(ctx, ctx.check(job.step, job.data_id))
    except DrpError as err:
        print(f"drp: error: {err}", file=sys.stderr)
        return err.exit_code
    print(json.dumps(result.to_dict(), sort_keys=True, default=str))
    return 0


def preload() -> None:
    """Import every step now, so forked workers start with them loaded (1.2 s of imports per job)."""
    from science.pipeline import calibrate, coadd, measure, merge, warp  # noqa: F401


def run_named_job(
    root: Path, release: str | None, name: str | None, step: str | None, data_id: str | None
) -> JobResult:
    """Run a job given by its name, or by STEP and a data id as JSON (what `drp jobs run` takes)."""
    job = Job.from_name(name) if name else Job(str(step), parse_data_id(str(data_id)))
    ctx = ReleaseContext.discover(root, release)
    return run_job(ctx, ctx.check(job.step, job.data_id))

"""Synthetic release: deterministic, well-formed FITS, and pixels that carry the truth fluxes."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from common.errors import InvalidInputError
from science.files import read_provenance
from science.layout import Layout
from science.skymap import SkyMapConfig
from science.synth import ReleaseConfig, Visit, generate_release, load_manifest, visit_wcs

TINY = ReleaseConfig(
    name="tiny",
    skymap=SkyMapConfig(
        tracts_x=1,
        tracts_y=1,
        tract_size_deg=0.02,
        tract_overlap_deg=0.002,
        patches_per_side=2,
        patch_border_pix=20,
        pixel_scale_arcsec=0.2,
    ),
    bands=("g", "r"),
    visits_per_band=1,
    image_pix=400,
)


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("site")
    generate_release(TINY, root)
    return root


def test_manifest_and_files(release: Path) -> None:
    man = load_manifest(release, "tiny")
    assert len(man["visits"]) == 2
    assert {v["band"] for v in man["visits"]} == {"g", "r"}
    layout = Layout("tiny")
    for v in man["visits"]:
        assert (release / layout.raw(v["band"], v["visit"])).exists()
        assert [0, 0] in v["patches"]
    assert read_provenance(release / layout.truth())["seed"] == TINY.seed
    assert pq.read_table(release / layout.refcat()).num_rows > 0
    assert not list(release.rglob("*.part-*"))


def test_raw_header_has_metadata_and_wcs(release: Path) -> None:
    v = load_manifest(release, "tiny")["visits"][0]
    with fits.open(release / Layout("tiny").raw(v["band"], v["visit"])) as hdul:
        h = hdul[0].header
        assert (h["VISIT"], h["BAND"], h["EXPTIME"]) == (v["visit"], v["band"], TINY.exptime_s)
        assert h["MJD-OBS"] == pytest.approx(v["mjd"])
        assert WCS(h).wcs.ctype[0] == "RA---TAN"
        data = hdul[0].data
    assert data.shape == (400, 400) and data.dtype.kind == "f" and data.dtype.itemsize == 4
    # Sky level near the configured value; at least one bad column (all 0 or all saturated).
    assert np.median(data) == pytest.approx(TINY.sky_counts, rel=0.1)
    cols = (data == 0).all(axis=0) | (data >= TINY.saturation).all(axis=0)
    assert cols.sum() >= TINY.bad_columns


def test_isolated_star_carries_its_truth_flux(release: Path) -> None:
    man = load_manifest(release, "tiny")
    v = man["visits"][1]
    truth = pq.read_table(release / Layout("tiny").truth())
    with fits.open(release / Layout("tiny").raw(v["band"], v["visit"])) as hdul:
        data = hdul[0].data.astype(float)
    visit = Visit(**{k: v[k] for k in Visit.__dataclass_fields__})
    x, y = visit_wcs(visit, TINY).all_world2pix(np.asarray(truth["ra"]), np.asarray(truth["dec"]), 0)
    mag = np.asarray(truth[f"mag_{v['band']}"])
    star = np.asarray(truth["is_star"])
    # Brightest star well inside, with no other source within 25 pixels.
    order = np.argsort(mag)
    for k in order:
        if not star[k] or not (40 < x[k] < 360 and 40 < y[k] < 360):
            continue
        d = np.hypot(x - x[k], y - y[k])
        if (d < 25).sum() == 1:
            break
    else:
        pytest.skip("no isolated bright star in this tiny release")
    xi, yi = round(x[k]), round(y[k])
    box = data[yi - 15 : yi + 16, xi - 15 : xi + 16]
    if (box == 0).all(axis=0).any() or (box >= TINY.saturation).any():
        pytest.skip("bad column or saturation on the star")
    sky = np.median(data[yi - 40 : yi + 41, xi - 40 : xi + 41])
    measured = box.sum() - sky * box.size
    expected = TINY.exptime_s * 10 ** (-0.4 * (mag[k] - v["zero_point"]))
    noise = math.sqrt(expected + box.size * (sky + TINY.read_noise**2))
    assert abs(measured - expected) < 5 * noise + 0.02 * expected


def test_deterministic_for_a_seed(tmp_path: Path, release: Path) -> None:
    generate_release(TINY, tmp_path)
    v = load_manifest(release, "tiny")["visits"][0]
    rel = Layout("tiny").raw(v["band"], v["visit"])
    assert np.array_equal(fits.getdata(tmp_path / rel), fits.getdata(release / rel))
    other = TINY.model_copy(update={"seed": 7})
    generate_release(other, tmp_path / "other")
    assert not np.array_equal(fits.getdata(tmp_path / "other" / rel), fits.getdata(release / rel))


def test_unknown_band_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="unknown band"):
        generate_release(TINY.model_copy(update={"bands": ("q",)}), tmp_path)


def test_layout_rejects_escaping_names() -> None:
    with pytest.raises(InvalidInputError):
        Layout("../etc")
    with pytest.raises(InvalidInputError):
        Layout("dr1").raw("../x", 1)
    with pytest.raises(InvalidInputError):
        Layout("dr1").raw("g", -1)

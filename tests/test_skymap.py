"""Sky map geometry: every position has one tract and one patch; overlaps are where they should be."""

from __future__ import annotations

import numpy as np
import pytest

from science.skymap import SkyMap, SkyMapConfig


@pytest.fixture(scope="module")
def skymap() -> SkyMap:
    return SkyMap(
        SkyMapConfig(
            tracts_x=3,
            tracts_y=2,
            tract_size_deg=0.1,
            tract_overlap_deg=0.01,
            patches_per_side=3,
            patch_border_pix=20,
            pixel_scale_arcsec=0.5,
        )
    )


def test_shape_and_ids(skymap: SkyMap) -> None:
    assert [t.id for t in skymap.tracts] == list(range(6))
    t = skymap.tract(4)
    assert (t.ix, t.iy) == (1, 1)
    assert len(t.patches) == 9
    assert skymap.tract_inner_pix == 720  # 0.1 deg at 0.5 arcsec
    assert t.outer.shape == (720 + 2 * 72, 720 + 2 * 72)
    with pytest.raises(KeyError):
        skymap.tract(6)
    with pytest.raises(KeyError):
        t.patch(9)


def test_every_position_owned_by_exactly_one_tract_and_patch(skymap: SkyMap) -> None:
    rng = np.random.default_rng(1)
    ra0, ra1, dec0, dec1 = skymap.bounds_deg()
    ra = rng.uniform(ra0, ra1, 20_000)
    dec = rng.uniform(dec0, dec1, 20_000)
    tracts = skymap.find_tracts(ra, dec)
    inside = tracts >= 0
    assert inside.mean() > 0.7
    owners = np.array([t.owns(ra, dec) for t in skymap.tracts])
    assert (owners.sum(axis=0) == inside).all()  # one owner inside the map, none outside
    for t in skymap.tracts:
        sel = tracts == t.id
        x, y = t.sky_to_pixel(ra[sel], dec[sel])
        assert t.outer.contains(x, y).all()  # the owned cell lies within the tract's pixel grid
        patches = skymap.find_patches(t.id, ra[sel], dec[sel])
        assert (patches >= 0).all()
        counts = np.bincount(patches, minlength=9)
        assert counts.min() > 0.5 * counts.mean()  # patches are equal cells


def test_neighbouring_tracts_overlap_by_the_margin(skymap: SkyMap) -> None:
    a, b = skymap.tract(0), skymap.tract(1)
    # RA grows to the left (CDELT1 < 0): tract 1, at higher RA, meets tract 0 at tract 1's high x.
    ra, dec = b.wcs.all_pix2world([b.inner.x1 - 5], [b.inner.y0 + 100], 0)
    assert b.owns(ra, dec).all() and not a.owns(ra, dec).any()
    ax, ay = a.sky_to_pixel(ra, dec)
    assert a.outer.contains(ax, ay).all() and not a.inner.contains(ax, ay).any()
    # A point 0.03 deg into tract 1 (beyond the 0.01 deg margin) is outside tract 0's grid entirely.
    ra2 = ra + 0.03 / np.cos(np.radians(dec))
    ax, ay = a.sky_to_pixel(ra2, dec)
    assert not a.outer.contains(ax, ay).any()


def test_patch_wcs_is_tract_wcs_shifted(skymap: SkyMap) -> None:
    t = skymap.tract(2)
    p = t.patch(4)
    ra, dec = t.wcs.all_pix2world([p.outer.x0 + 10.0], [p.outer.y0 + 7.0], 0)
    px, py = p.wcs.all_world2pix(ra, dec, 0)
    assert px[0] == pytest.approx(10.0, abs=1e-6) and py[0] == pytest.approx(7.0, abs=1e-6)


def test_footprint_lookup(skymap: SkyMap) -> None:
    t = skymap.tract(0)
    # Inside patch 0 (low-x, low-y corner, 288 px wide), clear of its border and of tract 1's grid,
    # which reaches 2 x 72 px into tract 0's frame.
    xs = np.array([160, 240, 160, 240], dtype=float)
    ys = np.array([160, 160, 240, 240], dtype=float)
    ra, dec = t.wcs.all_pix2world(xs, ys, 0)
    assert skymap.patches_overlapping(ra, dec) == [(0, 0)]
    # A footprint covering the whole map touches every patch of every tract.
    r0, r1, d0, d1 = skymap.bounds_deg()
    every = skymap.patches_overlapping(np.array([r0, r1, r0, r1]), np.array([d0, d0, d1, d1]))
    assert len(every) == 6 * 9

"""Sky map: the survey area cut into tracts (each with its own TAN projection) and tracts into patches.

A regular grid of tracts around a centre, like LSST's discrete sky maps. A tract *owns* a cell of
the sky in (ra, dec): rows of constant declination, each row cut in right ascension with its own
cos(dec), so that the cells tile the sphere and every position has exactly one owning tract (square
pixel boxes in separate TAN projections would not tile: they overlap or leave gaps near corners).
The tract's pixel grid (its *outer* box) covers its cell plus ``tract_overlap_deg`` on every side,
which is where neighbouring tracts overlap. Patches tile the whole outer box in
``patches_per_side``² cells (the patch *inner* boxes); each patch's outer box adds
``patch_border_pix`` so that objects near a patch edge are measured whole, and the merge step keeps an
object from the patch whose inner box holds it, and only if the tract owns its position.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from astropy.wcs import WCS


class SkyMapConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    ra_deg: float = Field(default=55.0, ge=0.0, lt=360.0, description="centre of the tract grid")
    dec_deg: float = Field(default=-30.0, gt=-80.0, lt=80.0)
    tracts_x: int = Field(default=2, ge=1, le=1000)
    tracts_y: int = Field(default=2, ge=1, le=1000)
    tract_size_deg: float = Field(default=0.1, gt=0.0, le=5.0, description="side of a tract's inner region")
    tract_overlap_deg: float = Field(default=0.005, ge=0.0, le=1.0, description="margin on each side")
    patches_per_side: int = Field(default=2, ge=1, le=100)
    patch_border_pix: int = Field(default=24, ge=0, le=1000)
    pixel_scale_arcsec: float = Field(default=0.5, gt=0.0, le=10.0)


@dataclass(frozen=True)
class Box:
    """Half-open pixel box [x0, x1) × [y0, y1) in a tract's pixel frame."""

    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def shape(self) -> tuple[int, int]:
        return (self.y1 - self.y0, self.x1 - self.x0)

    def contains(self, x: NDArray[np.float64], y: NDArray[np.float64]) -> NDArray[np.bool_]:
        # Pixel centres are integers: pixel i covers [i - 0.5, i + 0.5).
        return (x >= self.x0 - 0.5) & (x < self.x1 - 0.5) & (y >= self.y0 - 0.5) & (y < self.y1 - 0.5)

    def intersects(self, other: Box) -> bool:
        return self.x0 < other.x1 and other.x0 < self.x1 and self.y0 < other.y1 and other.y0 < self.y1


def _tan_wcs(header: tuple[tuple[str, float | str], ...], x0: int = 0, y0: int = 0) -> WCS:
    """A TAN WCS from a tract's header items, with the pixel origin moved to (x0, y0)."""
    from astropy.wcs import WCS  # astropy costs ~0.6 s to import: only code that projects pays it

    hdr = dict(header)
    w = WCS(naxis=2)
    w.wcs.ctype = [str(hdr["CTYPE1"]), str(hdr["CTYPE2"])]
    w.wcs.crval = [float(hdr["CRVAL1"]), float(hdr["CRVAL2"])]
    w.wcs.cdelt = [float(hdr["CDELT1"]), float(hdr["CDELT2"])]
    w.wcs.crpix = [float(hdr["CRPIX1"]) - x0, float(hdr["CRPIX2"]) - y0]
    return w


@dataclass(frozen=True)
class Patch:
    tract: int
    index: int
    inner: Box
    outer: Box
    tract_wcs_header: tuple[tuple[str, float | str], ...]

    @cached_property
    def wcs(self) -> WCS:
        """The tract's projection with the origin moved to the patch's outer corner."""
        return _tan_wcs(self.tract_wcs_header, self.outer.x0, self.outer.y0)

    @property
    def shape(self) -> tuple[int, int]:
        return self.outer.shape


@dataclass(frozen=True)
class Tract:
    id: int
    ix: int
    iy: int
    ra_deg: float
    dec_deg: float
    half_width_ra_deg: float  # half the cell's extent in RA (degrees of RA, not of arc)
    half_height_deg: float
    inner: Box  # the owned cell's approximate pixel box (for display and footprints)
    outer: Box
    wcs_header: tuple[tuple[str, float | str], ...]
    patches: tuple[Patch, ...]

    @cached_property
    def wcs(self) -> WCS:
        return _tan_wcs(self.wcs_header)

    def patch(self, index: int) -> Patch:
        if not 0 <= index < len(self.patches):
            raise KeyError(f"tract {self.id} has no patch {index} (0..{len(self.patches) - 1})")
        return self.patches[index]

    def owns(self, ra: NDArray[np.float64], dec: NDArray[np.float64]) -> NDArray[np.bool_]:
        """Whether each position is in this tract's cell of the sky."""
        dra = (np.atleast_1d(ra) - self.ra_deg + 180.0) % 360.0 - 180.0
        ddec = np.atleast_1d(dec) - self.dec_deg
        return (
            (dra >= -self.half_width_ra_deg)
            & (dra < self.half_width_ra_deg)
            & (ddec >= -self.half_height_deg)
            & (ddec < self.half_height_deg)
        )

    def sky_to_pixel(self, ra: NDArray[np.float64], dec: NDArray[np.float64]) -> tuple[NDArray, NDArray]:
        x, y = self.wcs.all_world2pix(np.atleast_1d(ra), np.atleast_1d(dec), 0)
        return np.asarray(x), np.asarray(y)


class SkyMap:
    """All tracts and patches for one configuration; pure geometry, cheap to rebuild."""

    def __init__(self, config: SkyMapConfig) -> None:
        self.config = config
        c = config
        scale_deg = c.pixel_scale_arcsec / 3600.0
        n_inner = math.ceil(c.tract_size_deg / scale_deg)
        n_overlap = math.ceil(c.tract_overlap_deg / scale_deg)
        n_outer = n_inner + 2 * n_overlap
        self.tract_inner_pix = n_inner
        tracts = []
        half = c.tract_size_deg / 2
        for iy in range(c.tracts_y):
            dec = c.dec_deg + (iy - (c.tracts_y - 1) / 2) * c.tract_size_deg
            # The row's RA step keeps cells square on the sky at its widest (equator-most) edge.
            cos_dec = math.cos(math.radians(min(abs(dec - half), abs(dec + half))))
            for ix in range(c.tracts_x):
                tid = iy * c.tracts_x + ix
                ra = (c.ra_deg + (ix - (c.tracts_x - 1) / 2) * c.tract_size_deg / cos_dec) % 360.0
                # Pixel (0, 0) is the outer box's first pixel; the tract centre is the box centre.
                header: tuple[tuple[str, float | str], ...] = (
                    ("CTYPE1", "RA---TAN"),
                    ("CTYPE2", "DEC--TAN"),
                    ("CRVAL1", ra),
                    ("CRVAL2", dec),
                    ("CDELT1", -scale_deg),
                    ("CDELT2", scale_deg),
                    ("CRPIX1", (n_outer - 1) / 2 + 1),
                    ("CRPIX2", (n_outer - 1) / 2 + 1),
                )
                inner = Box(n_overlap, n_overlap, n_overlap + n_inner, n_overlap + n_inner)
                outer = Box(0, 0, n_outer, n_outer)
                patches = []
                n = c.patches_per_side
                edges = [round(k * n_outer / n) for k in range(n + 1)]
                for j in range(n):
                    for i in range(n):
                        pin = Box(edges[i], edges[j], edges[i + 1], edges[j + 1])
                        b = c.patch_border_pix
                        pout = Box(
                            max(0, pin.x0 - b),
                            max(0, pin.y0 - b),
                            min(n_outer, pin.x1 + b),
                            min(n_outer, pin.y1 + b),
                        )
                        patches.append(Patch(tid, j * n + i, pin, pout, header))
                tracts.append(
                    Tract(tid, ix, iy, ra, dec, half / cos_dec, half, inner, outer, header, tuple(patches))
                )
        self.tracts: tuple[Tract, ...] = tuple(tracts)

    def tract(self, tract_id: int) -> Tract:
        if not 0 <= tract_id < len(self.tracts):
            raise KeyError(f"no tract {tract_id} in this sky map (0..{len(self.tracts) - 1})")
        return self.tracts[tract_id]

    def find_tracts(self, ra: NDArray[np.float64], dec: NDArray[np.float64]) -> NDArray[np.int64]:
        """The tract that owns each position, or -1 outside the map."""
        ra, dec = np.atleast_1d(ra).astype(float), np.atleast_1d(dec).astype(float)
        out = np.full(ra.shape, -1, dtype=np.int64)
        for t in self.tracts:
            out[(out < 0) & t.owns(ra, dec)] = t.id
        return out

    def find_patches(
        self, tract_id: int, ra: NDArray[np.float64], dec: NDArray[np.float64]
    ) -> NDArray[np.int64]:
        """Patch index whose inner box holds each position in the given tract's pixel grid, or -1."""
        t = self.tract(tract_id)
        x, y = t.sky_to_pixel(ra, dec)
        out = np.full(x.shape, -1, dtype=np.int64)
        for p in t.patches:
            out[(out < 0) & p.inner.contains(x, y)] = p.index
        return out

    def patches_overlapping(
        self, ra_corners: NDArray[np.float64], dec_corners: NDArray[np.float64]
    ) -> list[tuple[int, int]]:
        """(tract, patch) pairs whose outer box meets the footprint given by its sky corners."""
        found: list[tuple[int, int]] = []
        for t in self.tracts:
            x, y = t.sky_to_pixel(ra_corners, dec_corners)
            fp = Box(math.floor(x.min()), math.floor(y.min()), math.ceil(x.max()) + 1, math.ceil(y.max()) + 1)
            if not fp.intersects(t.outer):
                continue
            found.extend((t.id, p.index) for p in t.patches if fp.intersects(p.outer))
        return found

    def bounds_deg(self) -> tuple[float, float, float, float]:
        """(ra_min, ra_max, dec_min, dec_max) of all tracts' outer regions."""
        ras, decs = [], []
        for t in self.tracts:
            n = t.outer.x1
            xs = np.array([0, n - 1, 0, n - 1], dtype=float)
            ys = np.array([0, 0, n - 1, n - 1], dtype=float)
            r, d = t.wcs.all_pix2world(xs, ys, 0)
            ras.extend(r)
            decs.extend(d)
        return min(ras), max(ras), min(decs), max(decs)

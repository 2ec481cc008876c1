"""A field observed several times in one night: asteroids move on the sky, everything else stays put.

Each field is a *scene* fixed on the sky (asteroid positions and motions, transients, star
residuals, saturated stars) seen at ``n_epochs`` exposures, each with its own time, pointing,
small rotation, noise, seeing and detector artifacts (cosmic rays, hot pixels, bad columns,
satellites, masks, dead borders), rendered by the same code as :func:`~neocascade.simulation.quadrant.simulate_image`.

Randomness: the scene of field ``f`` comes from ``SeedSequence([seed, f, 0, TAG])`` and epoch
``e`` from ``SeedSequence([seed, f, e + 1, TAG])``, so a field (or one epoch of it) is regenerated
alone and never shares a stream with a single-image simulation.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from neocascade.io.observation import MJD_RANGE, SECONDS_PER_DAY, Observation
from neocascade.simulation import artifacts as art
from neocascade.simulation.config import QUADRANT_SHAPE, SimConfig
from neocascade.simulation.psf import moffat, render_points, stamp_radius
from neocascade.simulation.quadrant import (
    Conditions,
    add_detector_artifacts,
    component_streams,
    conditions_from,
    draw_magnitudes,
    image_config,
    paint_stamps,
    psf_shape,
    render_background,
)
from neocascade.simulation.streaks import render_trail

TAG = 0x5EC14  # last entropy word of every revisit seed (nonzero, so no single-image seed shares its pool)
ID_STRIDE = 1_000_000  # object ids of field f are f * ID_STRIDE + k: unique over a whole simulated night
OBLIQUITY = 23.4392911  # deg, mean obliquity of the ecliptic at J2000
_SCENE_STREAMS = ("pointing", "asteroids", "transients", "residuals", "saturated")


@dataclass(frozen=True)
class Population:
    """Sky motion of one asteroid population, as seen near opposition.

    Attributes
    ----------
    name : str
    fraction : float
        Relative share of the asteroids (normalised over all populations).
    rate_range : (float, float)
        Sky rate in deg/day; uniform, or log-uniform when ``log_uniform``.
    log_uniform : bool
    direction_sigma : float
        Scatter (deg) of the motion direction about the ecliptic.
    retrograde_fraction : float
        Share moving west along the ecliptic (the rest move east).
    isotropic_fraction : float
        Share moving in a direction drawn uniformly from 0-360 deg instead.
    """

    name: str
    fraction: float
    rate_range: tuple[float, float]
    log_uniform: bool = False
    direction_sigma: float = 10.0
    retrograde_fraction: float = 0.8
    isotropic_fraction: float = 0.05

    def __post_init__(self) -> None:
        object.__setattr__(self, "rate_range", tuple(float(v) for v in self.rate_range))
        key = f"revisits.populations.{self.name}"
        lo, hi = self.rate_range if len(self.rate_range) == 2 else (np.nan, np.nan)
        if not 0.0 <= lo <= hi:
            raise ValueError(f"{key}.rate_range: must be (low, high) deg/day with 0 <= low <= high, got {self.rate_range}")
        if self.log_uniform and lo <= 0:
            raise ValueError(f"{key}.rate_range: log-uniform rates need low > 0, got {self.rate_range}")
        if not self.fraction >= 0 or not self.direction_sigma >= 0:
            raise ValueError(f"{key}: fraction and direction_sigma must be >= 0, "
                             f"got {self.fraction}, {self.direction_sigma}")
        for name in ("retrograde_fraction", "isotropic_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{key}.{name}: must be a probability in [0, 1], got {getattr(self, name)}")


# Rates near opposition (deg/day): main belt ~0.25 (0.15-0.35), Hildas and Jupiter Trojans slower
# (~0.1-0.2), near-Earth objects from ~0.3 to beyond 10 (log-uniform; close approaches move fastest).
DEFAULT_POPULATIONS: dict[str, dict[str, Any]] = {
    "main_belt": {"fraction": 0.88, "rate_range": (0.15, 0.35)},
    "hilda": {"fraction": 0.03, "rate_range": (0.10, 0.20)},
    "trojan": {"fraction": 0.03, "rate_range": (0.05, 0.15)},
    "neo": {"fraction": 0.06, "rate_range": (0.3, 12.0), "log_uniform": True, "direction_sigma": 45.0,
            "retrograde_fraction": 0.5, "isotropic_fraction": 0.5},
}


@dataclass(frozen=True)
class RevisitConfig:
    """Cadence, pointing and motion knobs of a simulated night (the look of each image is a :class:`SimConfig`).

    Build it from a preset with ``RevisitConfig(**data.revisits)``; unknown keys raise ``TypeError``
    and bad values ``ValueError`` naming the key.
    """

    interval_range: tuple[float, float] = (15.0, 90.0)  # minutes between consecutive visits, uniform (ZTF: 15-90)
    exptime: float = 30.0  # s, the ZTF survey exposure
    pixel_scale: float = 1.012  # arcsec/px (ZTF header PIXSCALE)
    pointing_sigma: float = 10.0  # px rms offset of each visit's pointing from the field centre
    rotation_sigma: float = 0.02  # deg rms field rotation per visit (0.02 deg ~ 0.5 px at the quadrant corner)
    night_mjd: float = 60310.15  # MJD (UTC) at which the night's first visit can start
    night_length: float = 0.3  # days over which the fields' first visits are spread, uniform
    ecliptic_latitude_max: float = 10.0  # deg: field centres lie within this of the ecliptic (asteroid fields)
    transient_variability: float = 0.2  # mag rms of a transient between visits
    single_epoch_fraction: float = 0.2  # share of transients seen in one visit only (flares, short outbursts)
    populations: Any = field(default_factory=lambda: dict(DEFAULT_POPULATIONS))  # name -> Population fields

    def __post_init__(self) -> None:
        object.__setattr__(self, "interval_range", tuple(float(v) for v in self.interval_range))
        pops = self.populations
        if isinstance(pops, Mapping):
            try:
                pops = tuple(p if isinstance(p, Population) else Population(name=str(k), **dict(p))
                             for k, p in pops.items())
            except TypeError as exc:
                raise ValueError(f"revisits.populations: {exc}") from None
        if not pops or not all(isinstance(p, Population) for p in pops):
            raise ValueError(f"revisits.populations: must be a non-empty mapping name -> population, got {pops!r}")
        if sum(p.fraction for p in pops) <= 0:
            raise ValueError("revisits.populations: the fractions must not all be 0")
        object.__setattr__(self, "populations", tuple(pops))
        lo, hi = self.interval_range if len(self.interval_range) == 2 else (np.nan, np.nan)
        if not 0.0 < lo <= hi:
            raise ValueError("revisits.interval_range: must be (low, high) minutes with 0 < low <= high, "
                             f"got {self.interval_range}")
        for name in ("exptime", "pixel_scale"):
            if not getattr(self, name) > 0:
                raise ValueError(f"revisits.{name}: must be > 0, got {getattr(self, name)}")
        for name in ("pointing_sigma", "rotation_sigma", "night_length", "transient_variability"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"revisits.{name}: must be >= 0, got {getattr(self, name)}")
        if not MJD_RANGE[0] <= self.night_mjd <= MJD_RANGE[1] - 1:
            raise ValueError(f"revisits.night_mjd: must be a plausible MJD, got {self.night_mjd}")
        if not 0.0 <= self.ecliptic_latitude_max <= 90.0:
            raise ValueError(f"revisits.ecliptic_latitude_max: must be in [0, 90] deg, got {self.ecliptic_latitude_max}")
        if not 0.0 <= self.single_epoch_fraction <= 1.0:
            raise ValueError(f"revisits.single_epoch_fraction: must be in [0, 1], got {self.single_epoch_fraction}")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-friendly dict of every knob (file metadata)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "populations"}
        out["interval_range"] = list(self.interval_range)
        out["populations"] = {p.name: {k: (list(v) if isinstance(v, tuple) else v)
                                       for k, v in dataclasses.asdict(p).items() if k != "name"}
                              for p in self.populations}
        return out


@dataclass(frozen=True, eq=False)
class Scene:
    """Everything of one field that is fixed before any image is rendered (sky positions in deg)."""

    field_index: int
    obs_mjd: np.ndarray  # (N,) mid-exposure MJD
    wcs: np.ndarray  # (N, 8) TAN rows of the visits
    reference_wcs: np.ndarray  # (8,) the field's nominal pointing (scene positions are drawn in its pixels)
    reference_mjd: float  # asteroid positions are given at this time
    asteroids: dict[str, np.ndarray]  # object_id, ra, dec, rate (deg/day), pa (deg E of N), magnitude, population
    transients: dict[str, np.ndarray]  # object_id, ra, dec, magnitude (K, N) (NaN: not visible), sign, single
    residuals: dict[str, np.ndarray]  # ra, dec, flux, amplitude, kind, theta, widen, sign
    saturated_seed: np.random.SeedSequence
    n_saturated: int


@dataclass(frozen=True, eq=False)
class Revisits:
    """One simulated field: its images and the canonical-format keys (:mod:`neocascade.io.npz`)."""

    images: np.ndarray  # (N, H, W) float32
    truth: np.ndarray  # (M, 7): image, x, y, magnitude, length, angle, object_id
    stationary: np.ndarray  # (K, 5): image, x, y, magnitude, object_id
    obs_mjd: np.ndarray  # (N,)
    exptime: np.ndarray  # (N,)
    wcs: np.ndarray  # (N, 8)
    field: np.ndarray  # (N,) int64
    epoch: np.ndarray  # (N,) int64
    conditions: list[Conditions]
    objects: dict[str, list]  # per asteroid: object_id, population, rate_deg_per_day, position_angle_deg, magnitude, ...
    transients: dict[str, list]  # per transient: object_id, negative, single_epoch


def _check_int(name: str, value: Any, low: int) -> int:
    """A non-negative integer argument, or ValueError naming it."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{name}: must be an integer >= {low}, got {value!r}")
    return int(value)


def _sequence(seed: int, field_index: int, slot: int) -> np.random.SeedSequence:
    """Seed of the scene (slot 0) or of visit ``slot - 1`` of one field."""
    return np.random.SeedSequence([int(seed), int(field_index), int(slot), TAG])


def ecliptic_to_equatorial(lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(ra, dec) in deg of ecliptic (lon, lat) in deg (J2000 mean obliquity; ra in [0, 360))."""
    lon, lat, eps = np.deg2rad(lon), np.deg2rad(lat), np.deg2rad(OBLIQUITY)
    sin_dec = np.sin(lat) * np.cos(eps) + np.cos(lat) * np.sin(eps) * np.sin(lon)
    ra = np.arctan2(np.sin(lon) * np.cos(eps) - np.tan(lat) * np.sin(eps), np.cos(lon))
    return np.mod(np.rad2deg(ra), 360.0), np.rad2deg(np.arcsin(np.clip(sin_dec, -1.0, 1.0)))


def offset_sky(ra: np.ndarray, dec: np.ndarray, east: np.ndarray, north: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sky positions (deg) at tangent-plane offsets ``east``, ``north`` (deg) from ``ra``, ``dec``: the gnomonic inverse."""
    a0, d0 = np.deg2rad(ra), np.deg2rad(dec)
    xi, eta = np.deg2rad(east), np.deg2rad(north)
    denom = np.cos(d0) - eta * np.sin(d0)
    ra_out = a0 + np.arctan2(xi, denom)
    dec_out = np.arctan2(np.sin(d0) + eta * np.cos(d0), np.hypot(xi, denom))
    return np.mod(np.rad2deg(ra_out), 360.0), np.rad2deg(dec_out)


def position_angle(ra: np.ndarray, dec: np.ndarray, ra2: np.ndarray, dec2: np.ndarray) -> np.ndarray:
    """Position angle (deg, east of north, [0, 360)) of the direction from (ra, dec) to (ra2, dec2)."""
    a1, d1, a2, d2 = (np.deg2rad(v) for v in (ra, dec, ra2, dec2))
    pa = np.arctan2(np.sin(a2 - a1) * np.cos(d2), np.cos(d1) * np.sin(d2) - np.sin(d1) * np.cos(d2) * np.cos(a2 - a1))
    return np.mod(np.rad2deg(pa), 360.0)


def asteroid_sky(scene: Scene, mjd: float | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(ra, dec) in deg of every asteroid of ``scene`` at time ``mjd`` (linear motion on a great circle)."""
    a = scene.asteroids
    travel = a["rate"] * (np.asarray(mjd, dtype=np.float64) - scene.reference_mjd)
    pa = np.deg2rad(a["pa"])
    return offset_sky(a["ra"], a["dec"], travel * np.sin(pa), travel * np.cos(pa))


def _wcs_row(ra: float, dec: float, shape: tuple[int, int], scale_deg: float, rotation_deg: float) -> np.ndarray:
    """TAN row centred on the image with north up (+y), east left (-x), rotated by ``rotation_deg``."""
    c, s = np.cos(np.deg2rad(rotation_deg)), np.sin(np.deg2rad(rotation_deg))
    cd = scale_deg * np.array([[-1.0, 0.0], [0.0, 1.0]]) @ np.array([[c, -s], [s, c]])
    return np.array([ra, dec, (shape[1] + 1) / 2.0, (shape[0] + 1) / 2.0, *cd.reshape(4)])


def _uniform_positions(rng: np.random.Generator, n: int, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) uniform over the image."""
    h, w = shape
    return rng.uniform(0.0, w - 1.0, n), rng.uniform(0.0, h - 1.0, n)


def _log_uniform(rng: np.random.Generator, bounds: tuple[float, float], size: int) -> np.ndarray:
    """Draws spread evenly in log between the bounds."""
    return np.exp(rng.uniform(np.log(bounds[0]), np.log(bounds[1]), size))


def draw_scene(config: SimConfig, revisits: RevisitConfig, *, seed: int, field_index: int, n_epochs: int) -> Scene:
    """Draw what one field holds on the sky and when and where it is observed.

    Parameters
    ----------
    config : SimConfig
        Image knobs: ``shape``, ``n_asteroids``, magnitudes, transient, residual and saturated-star rates.
    revisits : RevisitConfig
        Cadence, pointing and motion knobs.
    seed, field_index : int
        Non-negative; the scene comes from ``SeedSequence([seed, field_index, 0, TAG])``.
    n_epochs : int
        Visits of the field (>= 1).

    Returns
    -------
    Scene
        Asteroid ids are ``field_index * ID_STRIDE + (0 .. n_asteroids - 1)``; transient ids continue
        after them, so ids are unique over all fields of a night.

    Notes
    -----
    Asteroids are placed uniformly over the nominal image at the middle of the visits, so fast
    movers may leave the image in some visits. Field centres lie near the ecliptic; motion
    directions scatter about it (mostly retrograde, as near opposition), and a share of each
    population moves in any direction. Counts of sky-fixed sources use ``config``'s rates; with a
    randomized sky (``config.sky``) only each visit's look (PSF, noise, artifacts) is redrawn.
    """
    if not isinstance(config, SimConfig) or not isinstance(revisits, RevisitConfig):
        raise ValueError("config, revisits: must be a SimConfig and a RevisitConfig")
    seed, field_index = _check_int("seed", seed, 0), _check_int("field_index", field_index, 0)
    n_epochs = _check_int("n_epochs", n_epochs, 1)
    children = _sequence(seed, field_index, 0).spawn(len(_SCENE_STREAMS))
    streams = {name: np.random.default_rng(child) for name, child in zip(_SCENE_STREAMS, children)}
    shape = config.shape
    area = shape[0] * shape[1] / (QUADRANT_SHAPE[0] * QUADRANT_SHAPE[1])
    scale = revisits.pixel_scale / 3600.0

    rng = streams["pointing"]
    lon = rng.uniform(0.0, 360.0)
    lat = rng.uniform(-revisits.ecliptic_latitude_max, revisits.ecliptic_latitude_max)
    ra_c, dec_c = ecliptic_to_equatorial(lon, lat)
    ra_e, dec_e = ecliptic_to_equatorial(lon + 0.1, lat)
    ecliptic_pa = float(position_angle(ra_c, dec_c, ra_e, dec_e))
    start = revisits.night_mjd + rng.uniform(0.0, revisits.night_length)
    gaps = rng.uniform(*revisits.interval_range, n_epochs - 1) / (24.0 * 60.0)
    obs_mjd = start + 0.5 * revisits.exptime / SECONDS_PER_DAY + np.concatenate([[0.0], np.cumsum(gaps)])
    reference = _wcs_row(float(ra_c), float(dec_c), shape, scale, 0.0)
    centre = Observation(mjd=float(obs_mjd[0]), exptime=revisits.exptime, wcs=reference)
    offsets = rng.normal(0.0, revisits.pointing_sigma, (n_epochs, 2))
    rotations = rng.normal(0.0, revisits.rotation_sigma, n_epochs)
    ra_p, dec_p = centre.pixel_to_sky(reference[2] - 1.0 + offsets[:, 0], reference[3] - 1.0 + offsets[:, 1])
    wcs = np.stack([_wcs_row(float(a), float(d), shape, scale, float(r)) for a, d, r in zip(ra_p, dec_p, rotations)])

    rng = streams["asteroids"]
    n = config.n_asteroids
    x, y = _uniform_positions(rng, n, shape)
    ra, dec = centre.pixel_to_sky(x, y)
    pops = revisits.populations
    weights = np.array([p.fraction for p in pops], dtype=np.float64)
    which = rng.choice(len(pops), size=n, p=weights / weights.sum())
    rate, pa = np.zeros(n), np.zeros(n)
    for k, pop in enumerate(pops):
        sel = np.flatnonzero(which == k)
        m = sel.size
        lo_hi = pop.rate_range
        rate[sel] = _log_uniform(rng, lo_hi, m) if pop.log_uniform and m else rng.uniform(*lo_hi, m)
        backwards = rng.random(m) < pop.retrograde_fraction
        direction = ecliptic_pa + np.where(backwards, 180.0, 0.0) + rng.normal(0.0, pop.direction_sigma, m)
        anywhere = rng.random(m) < pop.isotropic_fraction
        pa[sel] = np.mod(np.where(anywhere, rng.uniform(0.0, 360.0, m), direction), 360.0)
    first_id = field_index * ID_STRIDE
    asteroids = {"object_id": first_id + np.arange(n, dtype=np.int64), "ra": ra, "dec": dec, "rate": rate, "pa": pa,
                 "magnitude": draw_magnitudes(config, rng, n), "population": which}

    rng = streams["transients"]
    k = int(rng.poisson(config.transient_rate * area))
    if n + k > ID_STRIDE:
        raise ValueError(f"config: {n} asteroids + {k} transients exceed the {ID_STRIDE} object ids of a field")
    x, y = _uniform_positions(rng, k, shape)
    ra, dec = centre.pixel_to_sky(x, y)
    mean = rng.uniform(*config.transient_magnitude_range, k)
    mags = mean[:, None] + rng.normal(0.0, revisits.transient_variability, (k, n_epochs))
    single = rng.random(k) < revisits.single_epoch_fraction
    seen_in = rng.integers(0, n_epochs, k)
    mags[single[:, None] & (np.arange(n_epochs)[None, :] != seen_in[:, None])] = np.nan
    sign = np.where(rng.random(k) < config.transient_negative_fraction, -1.0, 1.0)
    transients = {"object_id": first_id + n + np.arange(k, dtype=np.int64), "ra": ra, "dec": dec, "magnitude": mags,
                  "sign": sign, "single": single}

    rng = streams["residuals"]
    k = int(rng.poisson(config.star_residual_rate * area))
    x, y = _uniform_positions(rng, k, shape)
    ra, dec = centre.pixel_to_sky(x, y)
    flux = art.flux_of(rng.uniform(*config.star_magnitude_range, k), config.zero_point)
    fraction = _log_uniform(rng, config.residual_fraction_range, k)
    residuals = {"ra": ra, "dec": dec, "flux": flux, "amplitude": flux * fraction, "kind": rng.integers(0, 3, k),
                 "theta": rng.uniform(0.0, 2.0 * np.pi, k), "widen": rng.uniform(1.1, 1.4, k),
                 "sign": np.where(rng.random(k) < 0.5, -1.0, 1.0)}

    rng = streams["saturated"]
    n_saturated = int(rng.poisson(config.saturated_rate * area))
    return Scene(field_index=field_index, obs_mjd=obs_mjd, wcs=wcs, reference_wcs=reference,
                 reference_mjd=float(0.5 * (obs_mjd[0] + obs_mjd[-1])), asteroids=asteroids, transients=transients,
                 residuals=residuals, saturated_seed=children[_SCENE_STREAMS.index("saturated")].spawn(1)[0],
                 n_saturated=n_saturated)


def _residual_stamps(
    x: np.ndarray, y: np.ndarray, res: dict[str, np.ndarray], *, cond: Conditions, gain: float, poisson: bool,
    rng: np.random.Generator,
) -> list[art.Stamp]:
    """Star-subtraction residuals (dipole, ring, hole) at given pixel positions, vectorised over the stars.

    Always a round Moffat of the visit's FWHM: residuals are a few per cent of a star's flux, so
    the PSF's shape options matter far less for them than for asteroids and transients.
    """
    if x.size == 0:
        return []
    radius = stamp_radius(cond.fwhm) + 4
    grid = np.arange(2 * radius + 1, dtype=np.float64)
    col0 = np.rint(x).astype(np.int64) - radius
    row0 = np.rint(y).astype(np.int64) - radius
    dx = (col0 - x)[:, None, None] + grid[None, None, :]
    dy = (row0 - y)[:, None, None] + grid[None, :, None]
    star = moffat(dx, dy, fwhm=cond.fwhm, beta=cond.beta)
    star /= star.sum(axis=(1, 2), keepdims=True)
    ux = (0.15 * np.cos(res["theta"]))[:, None, None]
    uy = (0.15 * np.sin(res["theta"]))[:, None, None]
    dipole = moffat(dx - ux, dy - uy, fwhm=cond.fwhm, beta=cond.beta) - moffat(dx + ux, dy + uy, fwhm=cond.fwhm,
                                                                                 beta=cond.beta)
    widen = res["widen"][:, None, None]
    wider = moffat(dx / widen, dy / widen, fwhm=cond.fwhm, beta=cond.beta)  # a PSF widen times broader
    ring = (wider / wider.sum(axis=(1, 2), keepdims=True) - star) * res["sign"][:, None, None]
    kind = res["kind"][:, None, None]
    data = np.where(kind == 0, dipole, np.where(kind == 1, ring, -star))
    data *= (res["amplitude"] / np.abs(data).sum(axis=(1, 2)))[:, None, None]
    if poisson:
        data += rng.standard_normal(data.shape) * np.sqrt(res["flux"][:, None, None] * star / gain)
    data = data.astype(np.float32)
    return [art.Stamp(int(r), int(c), d) for r, c, d in zip(row0, col0, data)]


def _moved(stamps: list[art.Stamp], reference: Observation, visit: Observation) -> list[art.Stamp]:
    """Stamps drawn in the reference frame, shifted by whole pixels to where their centres fall in ``visit``."""
    if not stamps:
        return []
    cx = np.array([s.col0 + 0.5 * (s.data.shape[1] - 1) for s in stamps])
    cy = np.array([s.row0 + 0.5 * (s.data.shape[0] - 1) for s in stamps])
    x, y = visit.sky_to_pixel(*reference.pixel_to_sky(cx, cy))
    sx, sy = np.rint(x - cx).astype(np.int64), np.rint(y - cy).astype(np.int64)
    return [art.Stamp(s.row0 + int(dy), s.col0 + int(dx), s.data) for s, dx, dy in zip(stamps, sx, sy)]


def _inside(x: np.ndarray, y: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Positions inside [0, W) x [0, H)."""
    return (x >= 0) & (x < shape[1]) & (y >= 0) & (y < shape[0])


def render_epoch(
    config: SimConfig, revisits: RevisitConfig, scene: Scene, epoch: int, *, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, Conditions]:
    """Render visit ``epoch`` of a field.

    Parameters
    ----------
    config, revisits
        As given to :func:`draw_scene`.
    scene : Scene
        From :func:`draw_scene` with the same ``seed``.
    epoch : int
        Visit index in ``[0, len(scene.obs_mjd))``; its noise, seeing and artifacts come from
        ``SeedSequence([seed, field, epoch + 1, TAG])``.
    seed : int

    Returns
    -------
    image : (H, W) float32
        Difference image in DN (NaN masked, dead borders 0.0), as :func:`simulate_image` draws it.
    truth : (m, 7) float64
        ``image (= epoch), x, y, magnitude, length, angle, object_id`` of the asteroids whose
        mid-exposure position falls inside the image: trail length = sky rate x exposure time in px,
        angle the motion direction in pixel space (deg from +x towards +y, in [0, 180)).
    stationary : (k, 5) float64
        ``image, x, y, magnitude, object_id`` of the transients painted in this visit.
    conditions : Conditions
    """
    n_epochs = len(scene.obs_mjd)
    epoch = _check_int("epoch", epoch, 0)
    if epoch >= n_epochs:
        raise ValueError(f"epoch: must be < {n_epochs}, got {epoch}")
    streams = component_streams(_sequence(_check_int("seed", seed, 0), scene.field_index, epoch + 1))
    config = image_config(config, streams)  # a randomized sky (config.sky) draws this visit's look
    cond = conditions_from(config, streams)
    psf = psf_shape(config, streams["psf"])
    shape = config.shape
    mjd = float(scene.obs_mjd[epoch])
    visit = Observation(mjd=mjd, exptime=revisits.exptime, wcs=scene.wcs[epoch])
    reference = Observation(mjd=mjd, exptime=revisits.exptime, wcs=scene.reference_wcs)
    image = render_background(config, streams, cond)

    res = scene.residuals
    x, y = visit.sky_to_pixel(res["ra"], res["dec"])
    paint_stamps(image, _residual_stamps(x, y, res, cond=cond, gain=config.gain, poisson=config.poisson,
                                         rng=streams["residuals"]))

    side = float(np.sqrt(shape[0] * shape[1] / (QUADRANT_SHAPE[0] * QUADRANT_SHAPE[1])))
    halos, sat_masks = art.saturated_stars(
        shape, rng=np.random.default_rng(scene.saturated_seed), n=scene.n_saturated, fwhm=cond.fwhm,
        beta=cond.beta, zero_point=config.zero_point, magnitude_range=config.saturated_magnitude_range,
        bleed_length_per_mag=config.bleed_length_per_mag * side)
    paint_stamps(image, _moved(halos, reference, visit))

    tr = scene.transients
    mag = tr["magnitude"][:, epoch] if len(tr["ra"]) else np.zeros(0)
    x, y = visit.sky_to_pixel(tr["ra"], tr["dec"])
    show = np.flatnonzero(np.isfinite(mag) & _inside(x, y, shape))
    stationary = np.column_stack([np.full(show.size, float(epoch)), x[show], y[show], mag[show],
                                  tr["object_id"][show].astype(np.float64)]).reshape(-1, 5)
    if show.size:
        stamps, row0, col0 = render_points(x[show], y[show], fwhm=cond.fwhm, beta=cond.beta,
                                           radius=stamp_radius(cond.fwhm), psf=psf)
        data = stamps * art.flux_of(mag[show], config.zero_point)[:, None, None]
        if config.poisson:
            data = streams["transients"].poisson(data * config.gain) / config.gain
        data = data * tr["sign"][show][:, None, None]
        paint_stamps(image, [art.Stamp(int(r), int(c), d.astype(np.float32)) for r, c, d in zip(row0, col0, data)])

    half = 0.5 * revisits.exptime / SECONDS_PER_DAY
    x, y = visit.sky_to_pixel(*asteroid_sky(scene, mjd))
    x0, y0 = visit.sky_to_pixel(*asteroid_sky(scene, mjd - half))
    x1, y1 = visit.sky_to_pixel(*asteroid_sky(scene, mjd + half))
    length = np.hypot(x1 - x0, y1 - y0)
    angle = np.mod(np.rad2deg(np.arctan2(y1 - y0, x1 - x0)), 180.0)
    ast = scene.asteroids
    show = np.flatnonzero(_inside(x, y, shape))
    flux = art.flux_of(ast["magnitude"][show], config.zero_point)
    rng = streams["asteroids"]
    stamps = []
    for i, f in zip(show, flux):
        stamp, row0, col0 = render_trail(x[i], y[i], length=length[i], angle=angle[i], fwhm=cond.fwhm, beta=cond.beta,
                                         psf=psf)
        data = stamp.astype(np.float64) * f
        if config.poisson:
            data = rng.poisson(data * config.gain) / config.gain
        stamps.append(art.Stamp(row0, col0, data.astype(np.float32)))
    paint_stamps(image, stamps)
    add_detector_artifacts(image, config, streams, cond, _moved(sat_masks, reference, visit))

    truth = np.column_stack([np.full(show.size, float(epoch)), x[show], y[show], ast["magnitude"][show],
                             length[show], angle[show], ast["object_id"][show].astype(np.float64)]).reshape(-1, 7)
    return image, truth, stationary, cond


def simulate_revisits(
    config: SimConfig, revisits: RevisitConfig, *, seed: int, field_index: int, n_epochs: int,
    out: np.ndarray | None = None,
) -> Revisits:
    """Simulate one field observed ``n_epochs`` times: images plus the canonical sequence keys.

    Parameters
    ----------
    config : SimConfig
        Image knobs (shape, asteroid count, noise, PSF, nuisance rates).
    revisits : RevisitConfig
        Cadence, exposure, pointing and motion knobs.
    seed, field_index : int
        Non-negative; see :func:`draw_scene` and :func:`render_epoch`.
    n_epochs : int
        Visits (>= 1; 2-4 in a survey night).
    out : (n_epochs, H, W) float32 array, optional
        Destination (e.g. a memory map), filled and returned as ``images``.

    Returns
    -------
    Revisits
        ``images``, ``truth`` (M, 7) and ``stationary`` (K, 5) in image order, ``obs_mjd``,
        ``exptime``, ``wcs`` (N, 8), ``field`` and ``epoch`` per image, the conditions of each
        visit, and per-object ``objects`` / ``transients`` tables for the file metadata.
    """
    scene = draw_scene(config, revisits, seed=seed, field_index=field_index, n_epochs=n_epochs)
    shape = (n_epochs, *config.shape)
    if out is None:
        out = np.empty(shape, dtype=np.float32)
    elif out.shape != shape or out.dtype != np.float32:
        raise ValueError(f"out: must be float32 with shape {shape}, got {out.dtype} {out.shape}")
    truths, stationaries, conditions = [np.empty((0, 7))], [np.empty((0, 5))], []
    for e in range(n_epochs):
        out[e], truth, stationary, cond = render_epoch(config, revisits, scene, e, seed=seed)
        truths.append(truth)
        stationaries.append(stationary)
        conditions.append(cond)
    ast, tr = scene.asteroids, scene.transients
    names = [p.name for p in revisits.populations]
    ra_ref, dec_ref = ast["ra"], ast["dec"]
    objects = {
        "object_id": ast["object_id"].tolist(),
        "population": [names[int(k)] for k in ast["population"]],
        "rate_deg_per_day": ast["rate"].tolist(),
        "position_angle_deg": ast["pa"].tolist(),
        "magnitude": ast["magnitude"].tolist(),
        "ra_deg": ra_ref.tolist(),
        "dec_deg": dec_ref.tolist(),
        "reference_mjd": scene.reference_mjd,
    }
    transients = {"object_id": tr["object_id"].tolist(), "negative": (tr["sign"] < 0).tolist(),
                  "single_epoch": tr["single"].tolist()}
    return Revisits(
        images=out, truth=np.concatenate(truths), stationary=np.concatenate(stationaries),
        obs_mjd=scene.obs_mjd.copy(), exptime=np.full(n_epochs, float(revisits.exptime)), wcs=scene.wcs.copy(),
        field=np.full(n_epochs, int(field_index), dtype=np.int64), epoch=np.arange(n_epochs, dtype=np.int64),
        conditions=conditions, objects=objects, transients=transients)

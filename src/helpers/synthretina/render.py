"""SynthRetina's renderer: one fundus photograph drawn from its findings, with lesion masks.

Explained in chapter 0, "Fundus images and the SynthRetina world". :func:`render`
paints in six passes, each a function below: background, optic disc, vessels,
neovascularisation, lesions, camera. Coordinates are normalised to [-1, 1]
across the image; soft shapes are blended into local patches of a float canvas.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .world import Camera

MASKED = ("microaneurysms", "haemorrhages", "flame_haemorrhages", "exudates", "cotton_wool_spots",
          "drusen", "neovascularisation", "av_nicking", "enlarged_cup", "disc_swelling", "optic_disc")

_GRIDS: dict[int, tuple] = {}


def _grid(size: int):
    if size not in _GRIDS:
        c = (np.arange(size, dtype=np.float32) + 0.5) / size * 2 - 1
        _GRIDS[size] = (c[None, :].repeat(size, 0), c[:, None].repeat(size, 1))
    return _GRIDS[size]


class _Canvas:
    """An RGB float image with helpers to blend soft shapes in local patches and record masks."""

    def __init__(self, size: int, want_masks: bool):
        self.size = size
        self.img = np.zeros((size, size, 3), np.float32)
        self.masks = {k: np.zeros((size, size), bool) for k in MASKED} if want_masks else None

    def px(self, x, y):
        return (x + 1) / 2 * self.size - 0.5, (y + 1) / 2 * self.size - 0.5

    def blob(self, x, y, rx, ry, angle, color, alpha, name=None, hard=0.0, rng=None):
        """Blend a soft ellipse (radii in normalised units) into the image."""
        s = self.size
        cx, cy = self.px(x, y)
        rxp, ryp = max(rx * s / 2, 0.6), max(ry * s / 2, 0.6)
        r = int(math.ceil(max(rxp, ryp) * 2 + 1))
        x0, x1 = max(int(cx) - r, 0), min(int(cx) + r + 2, s)
        y0, y1 = max(int(cy) - r, 0), min(int(cy) + r + 2, s)
        if x0 >= x1 or y0 >= y1:
            return
        xs = np.arange(x0, x1, dtype=np.float32) - cx
        ys = np.arange(y0, y1, dtype=np.float32)[:, None] - cy
        ca, sa = math.cos(angle), math.sin(angle)
        u = (xs * ca + ys * sa) / rxp
        v = (-xs * sa + ys * ca) / ryp
        d2 = u * u + v * v
        a = np.exp(-d2 * (1.0 + 3.0 * hard)) if hard < 1 else (d2 <= 1).astype(np.float32)
        if rng is not None:  # irregular edge (blot haemorrhages, cotton-wool spots)
            a = a * (0.75 + 0.5 * rng.random(a.shape, dtype=np.float32))
        a = np.clip(a * alpha, 0, 1)[..., None]
        patch = self.img[y0:y1, x0:x1]
        patch *= 1 - a
        patch += a * np.asarray(color, np.float32)
        if self.masks is not None and name:
            self.masks[name][y0:y1, x0:x1] |= a[..., 0] > 0.25 * alpha


def _polyline(rng, start, heading, length, step, curl=0.15):
    """A gently curving random path: points every ``step`` from ``start``."""
    n = max(int(length / step), 2)
    turns = np.cumsum(rng.normal(0, curl * math.sqrt(step), n))
    ang = heading + turns
    pts = np.cumsum(np.stack([np.cos(ang), np.sin(ang)], 1) * step, 0) + np.asarray(start)
    return pts.astype(np.float32)


def _vessel_tree(rng, cfg_geom, step):
    """Arteries and veins as (points, width) segments: arcades, nasal trunks and their branches."""
    disc_x, fovea_x, side = cfg_geom
    trees = {"artery": [], "vein": []}
    a = abs(disc_x - fovea_x)
    for kind, b0 in (("artery", 0.50), ("vein", 0.56)):
        for up in (-1, 1):
            b = b0 + rng.normal(0, 0.04)
            th_end = rng.uniform(1.9, 2.25)
            th = np.arange(0.05, th_end, step / max(a, b) * 0.9, dtype=np.float32)
            aa = a * (1 + rng.normal(0, 0.04))
            pts = np.stack([fovea_x + side * aa * np.cos(th), up * b * np.sin(th)], 1).astype(np.float32)
            pts[:, 0] += disc_x - pts[0, 0] + side * 0.02 * math.cos(0.05)
            thirds = np.array_split(pts, 3)  # vessels thin as they leave the disc
            trees[kind] += [(thirds[0], 1.0), (thirds[1], 0.85), (thirds[2], 0.7)]
            # nasal trunk
            heading = math.atan2(up * rng.uniform(0.6, 1.2), side)
            nasal = _polyline(rng, (disc_x, up * 0.02), heading, rng.uniform(0.45, 0.7), step)
            halves = np.array_split(nasal, 2)
            trees[kind] += [(halves[0], 0.7), (halves[1], 0.55)]
    # branches (two levels)
    for kind in trees:
        level = list(trees[kind])
        for depth in range(2):
            new = []
            for pts, w in level:
                for _ in range(int(rng.integers(1, 3)) if depth == 0 else int(rng.integers(0, 2))):
                    i = int(rng.integers(len(pts) // 5, max(len(pts) - 2, len(pts) // 5 + 1)))
                    d = pts[min(i + 1, len(pts) - 1)] - pts[max(i - 1, 0)]
                    heading = math.atan2(d[1], d[0]) + rng.choice([-1, 1]) * rng.uniform(0.5, 1.1)
                    child = _polyline(rng, pts[i], heading, rng.uniform(0.12, 0.35) * (0.7 ** depth), step, 0.3)
                    new.append((child, w * 0.55))
            trees[kind] += new
            level = new
    return trees


def _span(c, r, size):
    """Pixel range [lo, hi) covering the normalised interval [c - r, c + r]."""
    lo = int(max(((c - r) + 1) / 2 * size - 1, 0))
    hi = int(min(((c + r) + 1) / 2 * size + 2, size))
    return lo, max(hi, lo)


_INTERP: dict = {}


def _interp_matrix(n_in: int, n_out: int) -> np.ndarray:
    """Linear interpolation as a matrix ``[n_out, n_in]`` (pixel centres aligned)."""
    key = (n_in, n_out)
    if key not in _INTERP:
        pos = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
        lo = np.floor(pos).astype(int)
        hi = np.minimum(lo + 1, n_in - 1)
        w = (pos - lo).astype(np.float32)
        m = np.zeros((n_out, n_in), np.float32)
        m[np.arange(n_out), lo] += 1 - w
        m[np.arange(n_out), hi] += w
        _INTERP[key] = m
    return _INTERP[key]


def _sigmoid(z):
    return 0.5 * (1 + np.tanh(0.5 * z))


_SIGMA_BINS = np.array([0.35, 0.7, 1.2, 2.0, 3.2], np.float32)


RASTER_MAX = 256  # vessel maps are drawn at most at this size, then interpolated up


def _rasterise(size, segments):
    """Soft alpha map of line segments [(points, width_px)], grouped by width into blur bins.

    Above ``RASTER_MAX`` px the map is drawn at that size (widths scaled) and
    interpolated up: vessels are smooth, and this halves the cost at 512 px.
    """
    if size > RASTER_MAX:
        scale = RASTER_MAX / size
        small = _rasterise(RASTER_MAX, [(p, w * scale) for p, w in segments])
        m = _interp_matrix(RASTER_MAX, size)
        return np.clip(m @ small @ m.T, 0, 1)
    out = np.zeros((size, size), np.float32)
    by_bin: dict[int, list] = {}
    for pts, wpx in segments:
        sigma = max(wpx / 2.35, 0.35)
        k = int(np.argmin(np.abs(_SIGMA_BINS - sigma)))
        by_bin.setdefault(k, []).append(pts)
    for k, group in by_bin.items():
        pts = np.concatenate(group, 0)
        ix = np.round((pts[:, 0] + 1) / 2 * size - 0.5).astype(np.int64)
        iy = np.round((pts[:, 1] + 1) / 2 * size - 0.5).astype(np.int64)
        ok = (ix >= 0) & (ix < size) & (iy >= 0) & (iy < size)
        m = np.zeros((size, size), np.float32)
        m[iy[ok], ix[ok]] = 1.0
        s = float(_SIGMA_BINS[k])
        if s > 0.4:
            m = ndimage.gaussian_filter(m, s, truncate=2.0) * (math.sqrt(2 * math.pi) * s)
        np.maximum(out, np.clip(m, 0, 1), out=out)
    return out



# --------------------------------------------------------------------------- the six passes

@dataclass(frozen=True)
class _Eye:
    """Where things are in this eye (normalised units) and the pixel grid they are drawn on."""
    size: int
    X: np.ndarray
    Y: np.ndarray
    side: float      # +1: OD, disc on the right (nasal); -1: OS, mirrored
    rd: float        # disc radius
    disc_x: float
    disc_y: float
    fovea_x: float
    fovea_y: float
    step: float      # half a pixel


@dataclass(frozen=True)
class _Disc:
    """The drawn disc, kept for the oedema ring painted over the vessels."""
    box: tuple
    dist: np.ndarray  # distance to the disc centre inside ``box``
    radius: float
    colour: np.ndarray
    swollen: bool


def _eye(lab: dict, size: int, rng: np.random.Generator) -> _Eye:
    X, Y = _grid(size)
    side = 1.0 if lab["eye"] == "OD" else -1.0
    rd = 0.135 * (1 + rng.normal(0, 0.05))  # disc radius: 1/7 of the FOV diameter (1.9)
    disc_x, disc_y = side * 0.40, rng.normal(0, 0.03)
    fovea_x, fovea_y = disc_x - side * 2.5 * (2 * rd), disc_y + 0.03
    return _Eye(size, X, Y, side, rd, disc_x, disc_y, fovea_x, fovea_y, 1.0 / size)


def _around(rng: np.random.Generator, cx, cy, rmin, rmax):
    """A random point at a distance in [rmin, rmax] from (cx, cy)."""
    ang, rad = rng.uniform(0, 2 * math.pi), rng.uniform(rmin, rmax)
    return cx + rad * math.cos(ang), cy + rad * math.sin(ang)


def _background(cv: _Canvas, e: _Eye, rng: np.random.Generator) -> None:
    """Orange-red, darker toward the macula, dark fovea, choroidal texture."""
    base = np.array([0.80, 0.36, 0.16], np.float32) * np.array([rng.uniform(0.92, 1.08), rng.uniform(0.85, 1.15),
                                                                 rng.uniform(0.8, 1.2)], np.float32)
    d2f = (e.X - e.fovea_x) ** 2 + (e.Y - e.fovea_y) ** 2
    shade = 1 - 0.28 * np.exp(d2f * np.float32(-1 / (2 * 0.22 ** 2)))
    fx0, fx1 = _span(e.fovea_x, 0.12, e.size)
    fy0, fy1 = _span(e.fovea_y, 0.12, e.size)
    shade[fy0:fy1, fx0:fx1] -= 0.25 * np.exp(d2f[fy0:fy1, fx0:fx1] * np.float32(-1 / (2 * 0.035 ** 2)))
    m9 = _interp_matrix(9, e.size)
    tex = m9 @ rng.normal(0, 1, (9, 9)).astype(np.float32) @ m9.T
    shade *= 1 + 0.05 * tex
    cv.img[:] = shade[..., None] * base


def _disc(cv: _Canvas, e: _Eye, lab: dict) -> _Disc:
    """Optic disc and cup, drawn in the disc's bounding box (larger and blurred when swollen)."""
    swell = bool(lab["disc_swelling"])
    rdisc = e.rd * (1.25 if swell else 1.0)
    edge = 0.045 if swell else 0.008
    px0, px1 = _span(e.disc_x, rdisc + 6 * edge, e.size)
    py0, py1 = _span(e.disc_y, rdisc + 6 * edge, e.size)
    box = (slice(py0, py1), slice(px0, px1))
    d_disc = np.sqrt((e.X[box] - e.disc_x) ** 2 + (e.Y[box] - e.disc_y) ** 2)
    disc_a = _sigmoid((rdisc - d_disc) / edge)
    disc_col = np.array([0.95, 0.62, 0.38] if swell else [0.98, 0.76, 0.45], np.float32)
    patch = cv.img[box]
    patch += disc_a[..., None] * (disc_col - patch)
    cup_a = _sigmoid((lab["cdr"] * e.rd - d_disc) / 0.01)
    patch += (0.85 * cup_a)[..., None] * (np.array([1.0, 0.93, 0.78], np.float32) - patch)
    if cv.masks is not None:
        cv.masks["optic_disc"][box] |= disc_a > 0.5  # every eye has one: the anatomy, not a finding
        if lab["glaucoma"]:
            cv.masks["enlarged_cup"][box] |= cup_a > 0.5
        if swell:
            cv.masks["disc_swelling"][box] |= disc_a > 0.3
    return _Disc(box, d_disc, rdisc, disc_col, swell)


def _vessels(cv: _Canvas, e: _Eye, lab: dict, rng: np.random.Generator, disc: _Disc) -> dict:
    """Arteries and veins (narrowed arteries, nicked veins); returns the trees (new vessels follow the veins)."""
    size, step = e.size, e.step
    trees = _vessel_tree(rng, (e.disc_x, e.fovea_x, e.side), step)
    vein_w = max(0.022 * size / 2, 0.8)  # main vein width in px
    art_ratio = 0.45 if lab["arteriolar_narrowing"] else 0.72
    nick_sites = []
    veins = trees["vein"]
    for _ in range(lab["n_av_nicking"]):  # gaps in a main vein where an artery crosses it
        j = int(rng.choice([1, 6]))  # the middle third of an arcade vein
        pts, w = veins[j]
        i = int(rng.integers(len(pts) // 4, len(pts) * 3 // 4))
        half = max(int(0.025 / step), 2)
        nick_sites.append(pts[i].copy())
        d = pts[min(i + 1, len(pts) - 1)] - pts[i - 1]
        heading = math.atan2(d[1], d[0]) + math.pi / 2
        cross = _polyline(rng, pts[i] - 0.05 * np.array([math.cos(heading), math.sin(heading)]), heading, 0.1, step, 0)
        trees["artery"].append((cross, 0.5))
        veins[j] = (np.concatenate([pts[: i - half], pts[i + half:]]), w)
    art = _rasterise(size, [(p, vein_w * w * art_ratio * (0.8 + 0.2 * rng.random())) for p, w in trees["artery"]])
    vein = _rasterise(size, [(p, vein_w * w) for p, w in veins])
    cv.img += (0.9 * vein)[..., None] * (np.array([0.46, 0.07, 0.08], np.float32) - cv.img)
    cv.img += (0.85 * art)[..., None] * (np.array([0.78, 0.20, 0.12], np.float32) - cv.img)
    if disc.swollen:  # oedema blurs the disc margin over the vessels
        ring = np.exp(-((disc.dist - disc.radius) ** 2) / (2 * 0.04 ** 2)) * 0.6
        patch = cv.img[disc.box]
        patch += ring[..., None] * (disc.colour - patch)
    if cv.masks is not None and nick_sites:
        yy, xx = np.ogrid[:size, :size]
        r = max(0.03 * size / 2, 1.5)
        for p in nick_sites:
            cx, cy = cv.px(float(p[0]), float(p[1]))
            cv.masks["av_nicking"] |= (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r
    return trees


def _neovascularisation(cv: _Canvas, e: _Eye, lab: dict, rng: np.random.Generator, veins: list) -> None:
    """Fine tangled new vessels at the disc or along an arcade vein."""
    for _ in range(lab["n_neovascularisation"]):
        if rng.random() < 0.5:
            cx, cy = _around(rng, e.disc_x, e.disc_y, 0.0, e.rd)
        else:
            pts = veins[int(rng.choice([1, 6]))][0]
            cx, cy = pts[int(rng.integers(len(pts) // 4, len(pts) * 3 // 4))]
        tangle = [(_polyline(rng, (cx + rng.normal(0, 0.01), cy + rng.normal(0, 0.01)), rng.uniform(0, 6.3),
                             rng.uniform(0.03, 0.07), e.step, 2.5), max(e.size / 200, 0.7)) for _ in range(7)]
        nv = _rasterise(e.size, tangle)
        cv.img += (0.9 * nv)[..., None] * (np.array([0.70, 0.10, 0.10], np.float32) - cv.img)
        if cv.masks is not None:
            cv.masks["neovascularisation"] |= nv > 0.25


def _lesions(cv: _Canvas, e: _Eye, lab: dict, rng: np.random.Generator) -> None:
    """Drusen, exudates, cotton-wool spots, flame and blot haemorrhages, microaneurysms: each its look and place."""
    for _ in range(lab["n_drusen"]):
        x, y = _around(rng, e.fovea_x, e.fovea_y, 0.03, 0.28)
        r = rng.uniform(0.008, 0.02)
        cv.blob(x, y, r, r, 0, (0.95, 0.86, 0.55), 0.8, "drusen")
    ex_centres = [_around(rng, e.fovea_x, e.fovea_y, 0.08, 0.3) for _ in range(1 + lab["n_exudates"] // 6)]
    for i in range(lab["n_exudates"]):
        cx, cy = ex_centres[i % len(ex_centres)]
        x, y = _around(rng, cx, cy, 0.0, 0.06)
        r = rng.uniform(0.006, 0.014)
        cv.blob(x, y, r, r * rng.uniform(0.7, 1), rng.uniform(0, 3.14), (0.98, 0.90, 0.35), 1.0, "exudates", hard=1)
    for _ in range(lab["n_cotton_wool_spots"]):
        x, y = _around(rng, e.disc_x, e.disc_y, e.rd * 1.5, 0.45)
        r = rng.uniform(0.025, 0.045)
        cv.blob(x, y, r, r * 0.7, rng.uniform(0, 3.14), (0.93, 0.89, 0.80), 0.75, "cotton_wool_spots", rng=rng)
    for _ in range(lab["n_flame_haemorrhages"]):
        ang = rng.uniform(0, 2 * math.pi)
        rad = rng.uniform(e.rd * 1.3, 0.4)
        x, y = e.disc_x + rad * math.cos(ang), e.disc_y + rad * math.sin(ang)
        cv.blob(x, y, rng.uniform(0.035, 0.06), rng.uniform(0.008, 0.014), ang, (0.62, 0.08, 0.05), 0.95,
                "flame_haemorrhages")
    for _ in range(lab["n_haemorrhages"]):
        x, y = _around(rng, e.fovea_x, e.fovea_y, 0.05, 0.6)
        r = rng.uniform(0.012, 0.032)
        cv.blob(x, y, r, r * rng.uniform(0.7, 1), rng.uniform(0, 3.14), (0.50, 0.05, 0.05), 0.95, "haemorrhages",
                hard=0.6, rng=rng)
    for _ in range(lab["n_microaneurysms"]):
        x, y = _around(rng, e.fovea_x, e.fovea_y, 0.04, 0.5)
        r = rng.uniform(0.006, 0.01)
        cv.blob(x, y, r, r, 0, (0.42, 0.04, 0.04), 1.0, "microaneurysms", hard=0.8)


def _camera(img: np.ndarray, e: _Eye, lab: dict, camera: Camera, rng: np.random.Generator) -> np.ndarray:
    """Illumination gradient, colour cast, vignetting, blur, noise, FOV and gamma: the float canvas -> uint8."""
    size, X, Y = e.size, e.X, e.Y
    g_ang = rng.uniform(0, 2 * math.pi)
    grad = 1 + 0.12 * (X * math.cos(g_ang) + Y * math.sin(g_ang))
    r2 = X * X + Y * Y
    light = lab["illumination"] * grad * (1 - camera.vignetting * r2)
    img *= (light[..., None] * np.asarray(camera.cast, np.float32))
    blur_px = lab["blur"] * size / 128
    if blur_px > 0.3:
        w = max(int(round(blur_px * math.sqrt(6))), 1)  # two box passes ~ a Gaussian of sigma blur_px
        for _ in range(2):
            img = ndimage.uniform_filter(img, (w, w, 1))
    img += camera.noise * rng.standard_normal((size, size, 1), dtype=np.float32)
    fov = np.clip((0.95 - np.sqrt(r2)) * size / 2, 0, 1)
    img *= fov[..., None] * 255
    np.clip(img, 0, 255, out=img)
    out = img.astype(np.uint8)
    if camera.gamma != 1.0:  # gamma through a 256-entry lookup table
        lut = (255 * (np.arange(256) / 255.0) ** camera.gamma + 0.5).astype(np.uint8)
        out = lut[out]
    return out


def render(lab: dict, size: int, rng: np.random.Generator, camera: Camera, masks: bool = False):
    """Draw one fundus photograph for the findings in ``lab`` through ``camera``; returns (uint8 image, masks or None).

    ``size`` is trusted (callers check it: :func:`helpers.synthretina.sample`). The
    passes draw from ``rng`` in a fixed order, so an image depends only on its seed.
    """
    e = _eye(lab, size, rng)
    cv = _Canvas(size, masks)
    _background(cv, e, rng)
    disc = _disc(cv, e, lab)
    trees = _vessels(cv, e, lab, rng, disc)
    _neovascularisation(cv, e, lab, rng, trees["vein"])
    _lesions(cv, e, lab, rng)
    return _camera(cv.img, e, lab, camera, rng), cv.masks

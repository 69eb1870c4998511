"""SynthRetina: a procedural world of colour fundus photographs with known ground truth.

Explained in chapter 0, "Fundus images and the SynthRetina world". Every image
is drawn from its labels: first the grades are sampled (so prevalence and
balance are under control), then findings consistent with them, then the
picture; the grades written to the labels table are derived back from the drawn
findings by the rules below, and the tests check that both agree.

Anatomy: circular field of view (FOV) on black; orange-red fundus, darker toward
the macula, darker fovea 2.5 disc diameters temporal to the disc; yellow-orange
disc (1/7 of the FOV diameter) with a paler cup; arcades of arteries (narrower,
lighter) and veins (wider, darker) arching above and below the macula and
branching. Right eyes (OD) have the disc on the image's right, left eyes (OS)
are mirror images.

Grading rules (SynthRetina's own simplification of the clinical scales):

=====  ===========================================  ===========================================
grade  diabetic retinopathy (ICDR-like)             hypertensive retinopathy (Keith-Wagener-Barker-like)
=====  ===========================================  ===========================================
0      no DR lesion                                 normal arterioles, nothing else
1      microaneurysms only                          generalised arteriolar narrowing
2      dot/blot haemorrhages (< 10) or exudates     narrowing + arteriovenous nicking
3      >= 10 dot/blot haemorrhages, no new vessels  + flame haemorrhages or cotton-wool spots
4      neovascularisation                           + swollen disc (papilloedema)
=====  ===========================================  ===========================================

glaucoma = cup-to-disc ratio >= 0.6; amd = 5 or more drusen; normal = DR 0,
HR 0, no glaucoma, no AMD. DR lesions are microaneurysms, dot/blot
haemorrhages, hard exudates and neovascularisation; HR lesions are narrowing,
nicking, flame haemorrhages, cotton-wool spots and disc swelling (in real eyes
cotton-wool spots also occur in severe DR: here they count for HR only).

quality = "good" when blur < 1 px (at 128 px) and illumination within
[0.8, 1.15]; "usable" when blur < 1.8 px; otherwise "poor".
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage

from .data import ImageTable

MIN_SIZE, MAX_SIZE = 32, 512
GRADED = ("dr_grade", "hr_grade")
BINARY = ("glaucoma", "amd")
FINDINGS = ("microaneurysms", "haemorrhages", "flame_haemorrhages", "exudates", "cotton_wool_spots",
            "drusen", "neovascularisation", "av_nicking", "enlarged_cup", "arteriolar_narrowing",
            "disc_swelling")
MASKED = ("microaneurysms", "haemorrhages", "flame_haemorrhages", "exudates", "cotton_wool_spots",
          "drusen", "neovascularisation", "av_nicking", "enlarged_cup", "disc_swelling")
DR_NAMES = ["no DR", "mild NPDR", "moderate NPDR", "severe NPDR", "proliferative DR"]
HR_NAMES = ["no HR", "grade 1 HR", "grade 2 HR", "grade 3 HR", "grade 4 HR"]
SPLIT_IDS = {"train": 0, "valid": 1, "test": 2}


@dataclass(frozen=True)
class Camera:
    """A site's camera: colour cast, vignetting, blur (px at 128 px), noise, gamma."""
    name: str
    cast: tuple = (1.0, 1.0, 1.0)
    vignetting: float = 0.25
    blur: float = 0.3
    noise: float = 0.01
    gamma: float = 1.0


DEFAULT_SITES = (
    Camera("site-A", (1.00, 1.00, 1.00), 0.25, 0.3, 0.010, 1.00),
    Camera("site-B", (1.06, 0.92, 0.82), 0.45, 0.6, 0.015, 1.10),
    Camera("site-C", (0.88, 1.02, 1.12), 0.15, 0.8, 0.025, 0.90),
)


@dataclass
class Config:
    """What a SynthRetina dataset is drawn from (hashed to key the disk cache)."""
    dr_prevalence: tuple = (0.35, 0.2, 0.2, 0.15, 0.1)
    hr_prevalence: tuple = (0.4, 0.2, 0.15, 0.15, 0.1)
    glaucoma_prevalence: float = 0.2
    amd_prevalence: float = 0.2
    site_correlation: float = 0.0
    sites: tuple = field(default_factory=lambda: DEFAULT_SITES)

    def key(self) -> str:
        blob = json.dumps({k: (v if k != "sites" else [c.__dict__ for c in v])
                           for k, v in self.__dict__.items()}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


def make_config(prevalence: dict | None = None, balanced: bool = False, site_correlation: float = 0.0,
                sites=None) -> Config:
    """A :class:`Config` from friendly arguments, with clear errors for bad ones.

    ``prevalence`` maps ``dr_grade``/``hr_grade`` to five probabilities and
    ``glaucoma``/``amd`` to one; ``balanced=True`` makes both grades uniform.
    """
    cfg = Config()
    if balanced:
        cfg.dr_prevalence = cfg.hr_prevalence = (0.2,) * 5
    for key, value in (prevalence or {}).items():
        if key in GRADED:
            probs = tuple(float(v) for v in value)
            if len(probs) != 5 or any(not 0 <= p <= 1 for p in probs) or abs(sum(probs) - 1) > 1e-6:
                raise ValueError(f"prevalence[{key!r}] must be 5 probabilities in [0, 1] summing to 1, got {value}")
            setattr(cfg, "dr_prevalence" if key == "dr_grade" else "hr_prevalence", probs)
        elif key in BINARY:
            p = float(value)
            if not 0 <= p <= 1:
                raise ValueError(f"prevalence[{key!r}] must be in [0, 1], got {value}")
            setattr(cfg, f"{key}_prevalence", p)
        else:
            raise ValueError(f"unknown label {key!r} in prevalence; labels: {', '.join(GRADED + BINARY)}")
    if not 0 <= float(site_correlation) <= 1:
        raise ValueError(f"site_correlation must be in [0, 1], got {site_correlation}")
    cfg.site_correlation = float(site_correlation)
    if sites is not None:
        cfg.sites = tuple(sites)
    return cfg


def _check_size(size) -> int:
    if not isinstance(size, (int, np.integer)) or not MIN_SIZE <= size <= MAX_SIZE:
        raise ValueError(f"size must be an integer from {MIN_SIZE} to {MAX_SIZE} px, got {size!r}")
    return int(size)


# --------------------------------------------------------------------------- labels

def dr_grade_rule(n_microaneurysms, n_haemorrhages, n_exudates, n_neovascularisation) -> int:
    """DR grade from the DR lesions drawn (the table in the module docstring)."""
    if n_neovascularisation > 0:
        return 4
    if n_haemorrhages >= 10:
        return 3
    if n_haemorrhages > 0 or n_exudates > 0:
        return 2
    return 1 if n_microaneurysms > 0 else 0


def hr_grade_rule(arteriolar_narrowing, n_av_nicking, n_flame_haemorrhages, n_cotton_wool_spots,
                  disc_swelling) -> int:
    """HR grade from the HR findings drawn (the table in the module docstring)."""
    if disc_swelling:
        return 4
    if n_flame_haemorrhages > 0 or n_cotton_wool_spots > 0:
        return 3
    if n_av_nicking > 0:
        return 2
    return 1 if arteriolar_narrowing else 0


def sample_findings(rng: np.random.Generator, cfg: Config) -> dict:
    """Grades first, then findings consistent with them, then nuisance (site, eye, quality)."""
    dr = int(rng.choice(5, p=np.asarray(cfg.dr_prevalence) / sum(cfg.dr_prevalence)))
    hr = int(rng.choice(5, p=np.asarray(cfg.hr_prevalence) / sum(cfg.hr_prevalence)))
    glaucoma = bool(rng.random() < cfg.glaucoma_prevalence)
    amd = bool(rng.random() < cfg.amd_prevalence)
    ri = rng.integers
    f = {"n_microaneurysms": 0, "n_haemorrhages": 0, "n_exudates": 0, "n_neovascularisation": 0,
         "n_flame_haemorrhages": 0, "n_cotton_wool_spots": 0, "n_av_nicking": 0}
    if dr == 1:
        f["n_microaneurysms"] = int(ri(2, 9))
    elif dr == 2:
        f["n_microaneurysms"] = int(ri(3, 13))
        f["n_haemorrhages"] = int(ri(1, 10))
        f["n_exudates"] = int(ri(4, 16)) if rng.random() < 0.6 else 0
    elif dr >= 3:
        f["n_microaneurysms"] = int(ri(6, 16))
        f["n_haemorrhages"] = int(ri(10, 22)) if dr == 3 else int(ri(4, 20))
        f["n_exudates"] = int(ri(6, 24)) if rng.random() < 0.7 else 0
        f["n_neovascularisation"] = int(ri(1, 3)) if dr == 4 else 0
    narrowing = hr >= 1
    if hr >= 2:
        f["n_av_nicking"] = int(ri(1, 4))
    if hr >= 3:
        kind = rng.random()
        f["n_flame_haemorrhages"] = int(ri(2, 7)) if kind < 0.75 else 0
        f["n_cotton_wool_spots"] = int(ri(1, 5)) if kind >= 0.4 else 0
    f["arteriolar_narrowing"] = narrowing
    f["disc_swelling"] = hr == 4
    f["cdr"] = float(rng.uniform(0.6, 0.85) if glaucoma else rng.uniform(0.2, 0.4))
    f["n_drusen"] = int(ri(6, 26)) if amd else (int(ri(1, 3)) if rng.random() < 0.3 else 0)
    n_sites = len(cfg.sites)
    if rng.random() < cfg.site_correlation:
        site = min(dr * n_sites // 5, n_sites - 1)
    else:
        site = int(ri(n_sites))
    cam = cfg.sites[site]
    f["site"] = cam.name
    f["eye"] = "OD" if rng.random() < 0.5 else "OS"
    f["illumination"] = float(rng.uniform(0.7, 1.2))
    f["blur"] = float(cam.blur + rng.exponential(0.35))
    return f


def derive_labels(f: dict) -> dict:
    """Grades, diagnoses, presence flags and quality from the findings (the documented rules)."""
    lab = dict(f)
    lab["dr_grade"] = dr_grade_rule(f["n_microaneurysms"], f["n_haemorrhages"], f["n_exudates"],
                                    f["n_neovascularisation"])
    lab["hr_grade"] = hr_grade_rule(f["arteriolar_narrowing"], f["n_av_nicking"], f["n_flame_haemorrhages"],
                                    f["n_cotton_wool_spots"], f["disc_swelling"])
    lab["glaucoma"] = int(f["cdr"] >= 0.6)
    lab["amd"] = int(f["n_drusen"] >= 5)
    lab["normal"] = int(lab["dr_grade"] == 0 and lab["hr_grade"] == 0 and not lab["glaucoma"] and not lab["amd"])
    for name in FINDINGS:
        if f"n_{name}" in f:
            lab[f"has_{name}"] = int(f[f"n_{name}"] > 0)
    lab["has_enlarged_cup"] = lab["glaucoma"]
    lab["has_arteriolar_narrowing"] = int(f["arteriolar_narrowing"])
    lab["has_disc_swelling"] = int(f["disc_swelling"])
    lab["arteriolar_narrowing"] = int(f["arteriolar_narrowing"])
    lab["disc_swelling"] = int(f["disc_swelling"])
    ok_light = 0.8 <= f["illumination"] <= 1.15
    lab["quality"] = "good" if f["blur"] < 1.0 and ok_light else ("usable" if f["blur"] < 1.8 else "poor")
    return lab


_PHRASES = {
    "microaneurysms": ["scattered microaneurysms", "a few microaneurysms", "microaneurysms in the posterior pole"],
    "haemorrhages": ["dot and blot haemorrhages", "intraretinal blot haemorrhages", "several dot haemorrhages"],
    "exudates": ["hard exudates near the macula", "clusters of yellow hard exudates", "exudates at the posterior pole"],
    "neovascularisation": ["neovascularisation", "new vessels", "fine tangled new vessels"],
    "arteriolar_narrowing": ["generalised arteriolar narrowing", "attenuated arterioles", "narrow arterioles"],
    "av_nicking": ["arteriovenous nicking", "AV nipping at crossings", "nicking of veins at arteriolar crossings"],
    "flame_haemorrhages": ["flame-shaped haemorrhages near the disc", "splinter haemorrhages", "flame haemorrhages"],
    "cotton_wool_spots": ["cotton-wool spots", "soft exudates", "pale fluffy cotton-wool spots"],
    "disc_swelling": ["a swollen optic disc with blurred margins", "papilloedema", "disc oedema"],
    "enlarged_cup": ["an enlarged optic cup", "increased cup-to-disc ratio", "cupping of the optic disc"],
    "drusen": ["drusen around the macula", "macular drusen", "multiple yellow drusen"],
}
_OPENINGS = ["{eye} fundus: ", "Fundus photograph of the {eye_long}. ", "{eye_long}, colour fundus photo: "]
_NORMAL = ["no abnormality seen.", "normal fundus.", "healthy retina, no lesions."]


def compose_report(lab: dict, rng: np.random.Generator) -> str:
    """A short text report of the findings, worded in one of several ways (for the FLAIR chapter)."""
    eye_long = "right eye" if lab["eye"] == "OD" else "left eye"
    text = _OPENINGS[int(rng.integers(len(_OPENINGS)))].format(eye=lab["eye"], eye_long=eye_long)
    found = [name for name in _PHRASES if lab.get(f"has_{name}")]
    if not found:
        return text + _NORMAL[int(rng.integers(len(_NORMAL)))]
    rng.shuffle(found)
    parts = [_PHRASES[n][int(rng.integers(3))] for n in found]
    body = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    diag = []
    if lab["dr_grade"]:
        diag.append(DR_NAMES[lab["dr_grade"]])
    if lab["hr_grade"]:
        diag.append(HR_NAMES[lab["hr_grade"]])
    if lab["glaucoma"]:
        diag.append("suspected glaucoma")
    if lab["amd"]:
        diag.append("age-related macular degeneration")
    return text + body[0].upper() + body[1:] + ". " + ("Impression: " + "; ".join(diag) + "." if diag else "")


# --------------------------------------------------------------------------- drawing

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


def render(lab: dict, size: int, rng: np.random.Generator, cfg: Config, masks: bool = False):
    """Draw one fundus photograph for the findings in ``lab``; returns (uint8 image, masks or None)."""
    size = _check_size(size)
    X, Y = _grid(size)
    side = 1.0 if lab["eye"] == "OD" else -1.0  # OD: disc on the right (nasal)
    rd = 0.135 * (1 + rng.normal(0, 0.05))  # disc radius: 1/7 of the FOV diameter (1.9)
    disc_x, disc_y = side * 0.40, rng.normal(0, 0.03)
    fovea_x, fovea_y = disc_x - side * 2.5 * (2 * rd), disc_y + 0.03
    cv = _Canvas(size, masks)
    step = 1.0 / size  # half a pixel in normalised units

    # background: orange-red, darker toward the macula, dark fovea, choroidal texture
    base = np.array([0.80, 0.36, 0.16], np.float32) * np.array([rng.uniform(0.92, 1.08), rng.uniform(0.85, 1.15),
                                                                 rng.uniform(0.8, 1.2)], np.float32)
    d2f = (X - fovea_x) ** 2 + (Y - fovea_y) ** 2
    shade = 1 - 0.28 * np.exp(d2f * np.float32(-1 / (2 * 0.22 ** 2)))
    fx0, fx1 = _span(fovea_x, 0.12, size)
    fy0, fy1 = _span(fovea_y, 0.12, size)
    shade[fy0:fy1, fx0:fx1] -= 0.25 * np.exp(d2f[fy0:fy1, fx0:fx1] * np.float32(-1 / (2 * 0.035 ** 2)))
    m9 = _interp_matrix(9, size)
    tex = m9 @ rng.normal(0, 1, (9, 9)).astype(np.float32) @ m9.T
    shade *= 1 + 0.05 * tex
    cv.img[:] = shade[..., None] * base

    # optic disc and cup (drawn in the disc's bounding box)
    swell = bool(lab["disc_swelling"])
    rdisc = rd * (1.25 if swell else 1.0)
    edge = 0.045 if swell else 0.008
    px0, px1 = _span(disc_x, rdisc + 6 * edge, size)
    py0, py1 = _span(disc_y, rdisc + 6 * edge, size)
    box = (slice(py0, py1), slice(px0, px1))
    d_disc = np.sqrt((X[box] - disc_x) ** 2 + (Y[box] - disc_y) ** 2)
    disc_a = _sigmoid((rdisc - d_disc) / edge)
    disc_col = np.array([0.95, 0.62, 0.38] if swell else [0.98, 0.76, 0.45], np.float32)
    patch = cv.img[box]
    patch += disc_a[..., None] * (disc_col - patch)
    cup_a = _sigmoid((lab["cdr"] * rd - d_disc) / 0.01)
    patch += (0.85 * cup_a)[..., None] * (np.array([1.0, 0.93, 0.78], np.float32) - patch)
    if masks:
        if lab["glaucoma"]:
            cv.masks["enlarged_cup"][box] |= cup_a > 0.5
        if swell:
            cv.masks["disc_swelling"][box] |= disc_a > 0.3

    # vessels
    trees = _vessel_tree(rng, (disc_x, fovea_x, side), step)
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
    if swell:  # oedema blurs the disc margin over the vessels
        ring = np.exp(-((d_disc - rdisc) ** 2) / (2 * 0.04 ** 2)) * 0.6
        patch = cv.img[box]
        patch += ring[..., None] * (disc_col - patch)
    if masks:
        for p in nick_sites:
            cv.blob(float(p[0]), float(p[1]), 0.03, 0.03, 0, (0, 0, 0), 0.0)
            cx, cy = cv.px(float(p[0]), float(p[1]))
            r = max(0.03 * size / 2, 1.5)
            yy, xx = np.ogrid[:size, :size]
            cv.masks["av_nicking"] |= (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r

    def around(cx, cy, rmin, rmax):
        ang, rad = rng.uniform(0, 2 * math.pi), rng.uniform(rmin, rmax)
        return cx + rad * math.cos(ang), cy + rad * math.sin(ang)

    # neovascularisation: fine tangled vessels at the disc or along an arcade
    for _ in range(lab["n_neovascularisation"]):
        if rng.random() < 0.5:
            cx, cy = around(disc_x, disc_y, 0.0, rd)
        else:
            pts = trees["vein"][int(rng.choice([1, 6]))][0]
            cx, cy = pts[int(rng.integers(len(pts) // 4, len(pts) * 3 // 4))]
        tangle = [(_polyline(rng, (cx + rng.normal(0, 0.01), cy + rng.normal(0, 0.01)), rng.uniform(0, 6.3),
                             rng.uniform(0.03, 0.07), step, 2.5), max(size / 200, 0.7)) for _ in range(7)]
        nv = _rasterise(size, tangle)
        cv.img += (0.9 * nv)[..., None] * (np.array([0.70, 0.10, 0.10], np.float32) - cv.img)
        if masks:
            cv.masks["neovascularisation"] |= nv > 0.25

    # lesions, each with its look and place
    for _ in range(lab["n_drusen"]):
        x, y = around(fovea_x, fovea_y, 0.03, 0.28)
        r = rng.uniform(0.008, 0.02)
        cv.blob(x, y, r, r, 0, (0.95, 0.86, 0.55), 0.8, "drusen")
    ex_centres = [around(fovea_x, fovea_y, 0.08, 0.3) for _ in range(1 + lab["n_exudates"] // 6)]
    for i in range(lab["n_exudates"]):
        cx, cy = ex_centres[i % len(ex_centres)]
        x, y = around(cx, cy, 0.0, 0.06)
        r = rng.uniform(0.006, 0.014)
        cv.blob(x, y, r, r * rng.uniform(0.7, 1), rng.uniform(0, 3.14), (0.98, 0.90, 0.35), 1.0, "exudates", hard=1)
    for _ in range(lab["n_cotton_wool_spots"]):
        x, y = around(disc_x, disc_y, rd * 1.5, 0.45)
        r = rng.uniform(0.025, 0.045)
        cv.blob(x, y, r, r * 0.7, rng.uniform(0, 3.14), (0.93, 0.89, 0.80), 0.75, "cotton_wool_spots", rng=rng)
    for _ in range(lab["n_flame_haemorrhages"]):
        ang = rng.uniform(0, 2 * math.pi)
        rad = rng.uniform(rd * 1.3, 0.4)
        x, y = disc_x + rad * math.cos(ang), disc_y + rad * math.sin(ang)
        cv.blob(x, y, rng.uniform(0.035, 0.06), rng.uniform(0.008, 0.014), ang, (0.62, 0.08, 0.05), 0.95,
                "flame_haemorrhages")
    for _ in range(lab["n_haemorrhages"]):
        x, y = around(fovea_x, fovea_y, 0.05, 0.6)
        r = rng.uniform(0.012, 0.032)
        cv.blob(x, y, r, r * rng.uniform(0.7, 1), rng.uniform(0, 3.14), (0.50, 0.05, 0.05), 0.95, "haemorrhages",
                hard=0.6, rng=rng)
    for _ in range(lab["n_microaneurysms"]):
        x, y = around(fovea_x, fovea_y, 0.04, 0.5)
        r = rng.uniform(0.006, 0.01)
        cv.blob(x, y, r, r, 0, (0.42, 0.04, 0.04), 1.0, "microaneurysms", hard=0.8)

    # camera: illumination gradient, colour cast, vignetting, blur, gamma, noise, FOV
    cam = next(c for c in cfg.sites if c.name == lab["site"])
    g_ang = rng.uniform(0, 2 * math.pi)
    grad = 1 + 0.12 * (X * math.cos(g_ang) + Y * math.sin(g_ang))
    r2 = X * X + Y * Y
    light = lab["illumination"] * grad * (1 - cam.vignetting * r2)
    img = cv.img
    img *= (light[..., None] * np.asarray(cam.cast, np.float32))
    blur_px = lab["blur"] * size / 128
    if blur_px > 0.3:
        w = max(int(round(blur_px * math.sqrt(6))), 1)  # two box passes ~ a Gaussian of sigma blur_px
        for _ in range(2):
            img = ndimage.uniform_filter(img, (w, w, 1))
    img += cam.noise * rng.standard_normal((size, size, 1), dtype=np.float32)
    fov = np.clip((0.95 - np.sqrt(r2)) * size / 2, 0, 1)
    img *= fov[..., None] * 255
    np.clip(img, 0, 255, out=img)
    out = img.astype(np.uint8)
    if cam.gamma != 1.0:  # gamma through a 256-entry lookup table
        lut = (255 * (np.arange(256) / 255.0) ** cam.gamma + 0.5).astype(np.uint8)
        out = lut[out]
    return out, cv.masks


# --------------------------------------------------------------------------- datasets

def sample(index: int, seed: int = 0, size: int = 128, cfg: Config | None = None, split: str = "train",
           masks: bool = False, overrides: dict | None = None):
    """One image, its labels and (optionally) lesion masks — deterministic in (seed, split, index).

    ``overrides`` replaces sampled findings before drawing (the chapter-0 explorer uses it).
    """
    cfg = cfg or Config()
    size = _check_size(size)
    rng = np.random.default_rng([int(seed), SPLIT_IDS[split], int(index)])
    f = sample_findings(rng, cfg)
    for key, value in (overrides or {}).items():
        if key not in f:
            raise ValueError(f"unknown finding {key!r}; findings: {', '.join(sorted(f))}")
        f[key] = value
    lab = derive_labels(f)
    draw_rng = np.random.default_rng([int(seed), SPLIT_IDS[split], int(index), 1])
    img, m = render(lab, size, draw_rng, cfg, masks)
    lab["report"] = compose_report(lab, np.random.default_rng([int(seed), SPLIT_IDS[split], int(index), 2]))
    lab["index"] = int(index)
    return img, lab, m


def generate(n: int, seed: int = 0, size: int = 128, cfg: Config | None = None, split: str = "train",
             progress: bool = False):
    """``n`` images ``[n, size, size, 3]`` (uint8) and their labels table."""
    if n is None or int(n) < 0:
        raise ValueError(f"n must be a non-negative integer, got {n!r}")
    from tqdm.auto import tqdm
    imgs = np.zeros((int(n), size, size, 3), np.uint8)
    rows = []
    for i in tqdm(range(int(n)), desc=f"SynthRetina {split}", disable=not progress, leave=False):
        imgs[i], lab, _ = sample(i, seed, size, cfg, split)
        rows.append(lab)
    return imgs, pd.DataFrame(rows)


TASKS = {"dr_grade": "ordinal", "hr_grade": "ordinal", "glaucoma": "single", "amd": "single",
         "normal": "single", "quality": "single"}
CLASSES = {"dr_grade": DR_NAMES, "hr_grade": HR_NAMES, "glaucoma": ["no", "yes"], "amd": ["no", "yes"],
           "normal": ["no", "yes"]}


def synthretina_table(n_train=None, n_valid=None, n_test=None, size=None, seed: int = 0, root=None,
                      cache: bool = False, prevalence=None, balanced: bool = False, site_correlation: float = 0.0,
                      progress: bool = True) -> ImageTable:
    """SynthRetina as an :class:`~helpers.data.ImageTable` (what ``helpers.data.load("synthretina")`` returns).

    In memory by default; with ``cache=True`` the images and ``labels.csv`` are
    written once to ``<root>/synthretina-<key>/`` (the layout of a real
    dataset) and read back from there on later calls. ``site`` becomes an
    integer column ``site_id`` too, so it can serve as a target.
    """
    size = _check_size(128 if size is None else size)
    ns = {"train": n_train, "valid": n_valid, "test": n_test}
    for k, v in ns.items():
        if v is None or int(v) < 0:
            raise ValueError(f"SynthRetina needs n_{k} (a non-negative integer), got {v!r}")
    cfg = make_config(prevalence, balanced, site_correlation)
    if cache:
        from .env import data_root
        folder = data_root(root) / f"synthretina-{cfg.key()}-s{seed}-{size}px-{n_train}-{n_valid}-{n_test}"
        if not (folder / "labels.csv").exists():
            save_dataset(folder, cfg, seed, size, ns, progress)
        return load_folder(folder)
    imgs, tabs = [], []
    for split, n in ns.items():
        im, lab = generate(int(n), seed, size, cfg, split, progress)
        lab["split"] = split
        imgs.append(im)
        tabs.append(lab)
    labels = pd.concat(tabs, ignore_index=True)
    return _table(np.concatenate(imgs), labels, cfg)


def _table(images, labels, cfg) -> ImageTable:
    names = [c.name for c in cfg.sites]
    labels["site_id"] = labels["site"].map({n: i for i, n in enumerate(names)}).astype(int)
    classes = dict(CLASSES, site_id=names)
    return ImageTable(images, labels, tasks=dict(TASKS, site_id="single"), classes=classes, name="synthretina")


def save_dataset(folder: Path, cfg: Config, seed: int, size: int, ns: dict, progress: bool = True) -> Path:
    """Write images (PNG) and ``labels.csv`` like a real dataset; atomic: a temp folder renamed at the end."""
    from PIL import Image
    folder = Path(folder)
    tmp = folder.with_name(folder.name + ".partial")
    (tmp / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for split, n in ns.items():
        im, lab = generate(int(n), seed, size, cfg, split, progress)
        lab["split"] = split
        lab["path"] = [f"images/{split}_{i:06d}.png" for i in range(len(lab))]
        for arr, p in zip(im, lab["path"]):
            Image.fromarray(arr).save(tmp / p)
        rows.append(lab)
    pd.concat(rows, ignore_index=True).to_csv(tmp / "labels.csv", index=False)
    (tmp / "config.json").write_text(json.dumps({"key": cfg.key(), "seed": seed, "size": size, "n": ns}))
    if folder.exists():
        raise FileExistsError(f"{folder} appeared while generating; remove it or use it")
    tmp.rename(folder)
    return folder


def load_folder(folder: Path) -> ImageTable:
    """Read a SynthRetina folder written by :func:`save_dataset` into memory."""
    from PIL import Image
    folder = Path(folder)
    labels = pd.read_csv(folder / "labels.csv")
    images = np.stack([np.asarray(Image.open(folder / p).convert("RGB")) for p in labels["path"]])
    return _table(images, labels, Config())

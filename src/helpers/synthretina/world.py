"""SynthRetina's world: sites and cameras, what a dataset is drawn from, the grading rules, findings, reports.

Explained in chapter 0, "Fundus images and the SynthRetina world" (the rules are
tabled in :mod:`helpers.synthretina`). Grades are sampled first, then findings
consistent with them, then nuisance (site, eye, quality); the labels are derived
back from the findings by :func:`dr_grade_rule` and :func:`hr_grade_rule`.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

import numpy as np

from ..table import DR_NAMES, HR_NAMES

GRADED = ("dr_grade", "hr_grade")
BINARY = ("glaucoma", "amd")
FINDINGS = ("microaneurysms", "haemorrhages", "flame_haemorrhages", "exudates", "cotton_wool_spots",
            "drusen", "neovascularisation", "av_nicking", "enlarged_cup", "arteriolar_narrowing",
            "disc_swelling")


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


def dr_grade_rule(n_microaneurysms, n_haemorrhages, n_exudates, n_neovascularisation) -> int:
    """DR grade from the DR lesions drawn (the table in :mod:`helpers.synthretina`)."""
    if n_neovascularisation > 0:
        return 4
    if n_haemorrhages >= 10:
        return 3
    if n_haemorrhages > 0 or n_exudates > 0:
        return 2
    return 1 if n_microaneurysms > 0 else 0


def hr_grade_rule(arteriolar_narrowing, n_av_nicking, n_flame_haemorrhages, n_cotton_wool_spots,
                  disc_swelling) -> int:
    """HR grade from the HR findings drawn (the table in :mod:`helpers.synthretina`)."""
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


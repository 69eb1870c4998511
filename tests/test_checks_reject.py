"""Every exercise check accepts a right answer, rejects at least three plausible wrong ones, and answers a malformed
answer (a wrong type, a wrong shape, a function that raises) with an ExerciseError that says what is expected —
never a bare TypeError or KeyError. One table row per check; a meta-test fails when a check is missing from it."""
from dataclasses import dataclass

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from helpers import checks
from helpers.views import FundusViews


@dataclass
class Case:
    """The arguments of one right answer, of wrong answers (label → args) and of malformed ones (label → (args,
    a regular expression the ExerciseError's message must match))."""
    right: tuple
    wrong: dict
    malformed: dict


def _raises(exc, *args):
    """A student's function that raises ``exc`` whatever it is given."""
    raise exc(*args)


# chapter 0 ------------------------------------------------------------------------------------------------------


def _dr_rule():
    from helpers.synthretina import dr_grade_rule

    def off_by_one(c):  # grade 3 from more than 10 haemorrhages instead of 10 or more
        g = dr_grade_rule(**c)
        return 2 if g == 3 and c["n_haemorrhages"] == 10 else g

    def mildest_first(c):  # the rules read from grade 1 upwards: a microaneurysm hides everything else
        return 1 if c["n_microaneurysms"] > 0 else dr_grade_rule(**c)
    return Case(right=(lambda c: dr_grade_rule(**c),),
                wrong={"constant 0": (lambda c: 0,), "> 10 haemorrhages": (off_by_one,),
                       "mildest rule first": (mildest_first,),
                       "exudates ignored": (lambda c: dr_grade_rule(**{**c, "n_exudates": 0}),)},
                malformed={"four arguments": ((lambda ma, hm, ex, nv: 0,), r"called as fn\(counts\)"),
                           "returns text": ((lambda c: "grade 2",), "whole number from 0 to 4"),
                           "returns nothing": ((lambda c: None,), "whole number from 0 to 4"),
                           "not a function": ((2,), "function itself")})


def _hr_answers():
    return Case(right=({"a": 2, "b": 3, "c": 4},),
                wrong={"a and b swapped": ({"a": 3, "b": 2, "c": 4},), "c too low": ({"a": 2, "b": 3, "c": 2},),
                       "all one lower": ({"a": 1, "b": 2, "c": 3},), "all 0": ({"a": 0, "b": 0, "c": 0},)},
                malformed={"a list": (([2, 3, 4],), "one grade per eye"),
                           "capital keys": (({"A": 2, "B": 3, "C": 4},), "one grade per eye"),
                           "a float grade": (({"a": 2.0, "b": 3, "c": 4},), "whole number from 0 to 4"),
                           "a grade of 5": (({"a": 2, "b": 3, "c": 5},), "whole number from 0 to 4")})


def _site_shortcut():
    return Case(right=(0.9, 0.22),
                wrong={"swapped": (0.22, 0.9), "correlated too low": (0.3, 0.2),
                       "independent too high": (0.9, 0.6), "both high": (0.95, 0.95)},
                malformed={"text": (("0.9", "0.22"), "between 0 and 1, as numbers"),
                           "percentages": ((90.0, 0.2), "between 0 and 1"),
                           "a list": (([0.9], 0.22), "between 0 and 1")})


# chapter 1 ------------------------------------------------------------------------------------------------------


def _nt_xent(z1, z2, t, normalise=True, mask_self=True, both=True, reduction="mean"):
    """NT-Xent, and its usual mistakes when a flag is off."""
    n = len(z1)
    if normalise:
        z1, z2 = F.normalize(z1, dim=1), F.normalize(z2, dim=1)
    z = torch.cat([z1, z2])
    sim = z @ z.t() / t
    if mask_self:
        sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool), float("-inf"))
    rows = 2 * n if both else n
    return F.cross_entropy(sim[:rows], torch.cat([torch.arange(n) + n, torch.arange(n)])[:rows], reduction=reduction)


def _nt_xent_case():
    return Case(right=(_nt_xent,),
                wrong={"not normalised": (lambda a, b, t: _nt_xent(a, b, t, normalise=False),),
                       "self-similarity kept": (lambda a, b, t: _nt_xent(a, b, t, mask_self=False),),
                       "view 1 only": (lambda a, b, t: _nt_xent(a, b, t, both=False),),
                       "summed": (lambda a, b, t: _nt_xent(a, b, t, reduction="sum"),),
                       "temperature ignored": (lambda a, b, t: _nt_xent(a, b, 1.0),),
                       "NaN": (lambda a, b, t: torch.tensor(float("nan")),)},
                malformed={"one loss per view": ((lambda a, b, t: _nt_xent(a, b, t, reduction="none"),), "one number"),
                           "two arguments": ((lambda z, t: _nt_xent(z, z, t),), r"fn\(z1, z2, temperature\)"),
                           "not a function": ((torch.tensor(1.0),), "function itself")})


_SAFE, _BAD = {"dr": 0.4, "amd": 0.8}, {"dr": 0.3, "amd": 0.6}


def _learned_invariance():
    return Case(right=("yes", _SAFE, _BAD),
                wrong={"no, though they dropped": ("no", _SAFE, _BAD),
                       "yes, though they rose": ("yes", _BAD, _SAFE),
                       "no, for a small but real drop": ("no", {"dr": 0.40, "amd": 0.80}, {"dr": 0.38, "amd": 0.79}),
                       "no, scores as lists": ("no", [0.4, 0.8], [0.3, 0.6])},
                malformed={"means, not per diagnosis": (("yes", 0.6, 0.45), "per diagnosis"),
                           "scores as text": (("yes", {"dr": "0.4", "amd": "0.8"}, _BAD), "per diagnosis"),
                           "capitalised": (("Yes", _SAFE, _BAD), "'yes' or 'no'"),
                           "a bool": ((True, _SAFE, _BAD), "'yes' or 'no'")})


_COLOUR = pd.DataFrame({"SimCLR (camera changes)": [0.62, 0.40], "no camera change": [0.81, 0.41]},
                       index=["site_id", "dr_grade"])
_OFF = FundusViews(gain=0, gamma=0, noise=0, blur_p=0)


def _colour_shortcut():
    return Case(right=(_OFF, 0.62, 0.81, "without", _COLOUR),
                wrong={"swapped": (_OFF, 0.81, 0.62, "without", _COLOUR),
                       "the dr_grade row": (_OFF, 0.40, 0.41, "neither", _COLOUR),
                       "with": (_OFF, 0.62, 0.81, "with", _COLOUR),
                       "neither": (_OFF, 0.62, 0.81, "neither", _COLOUR),
                       "noise left on": (FundusViews(gain=0, gamma=0, blur_p=0), 0.62, 0.81, "without", _COLOUR)},
                malformed={"views as a dict": (({"gain": 0, "gamma": 0, "noise": 0, "blur_p": 0}, 0.62, 0.81,
                                                "without", _COLOUR), "FundusViews"),
                           "text numbers": ((_OFF, "0.62", "0.81", "without", _COLOUR), "as numbers"),
                           "a bool answer": ((_OFF, 0.62, 0.81, True, _COLOUR), "'with', 'without' or 'neither'"),
                           "colour as a dict": ((_OFF, 0.62, 0.81, "without", _COLOUR.to_dict()), "DataFrame")})


_TEMPS, _SCORES = [0.1, 0.2, 0.5], [0.50, 0.53, 0.47]


def _temperature_answer():
    return Case(right=(0.2, "intermediate", _TEMPS, _SCORES),
                wrong={"the lowest": (0.1, "lowest", _TEMPS, _SCORES),
                       "the best score, not its τ": (0.53, "intermediate", _TEMPS, _SCORES),
                       "right τ, called highest": (0.2, "highest", _TEMPS, _SCORES),
                       "the highest": (0.5, "highest", _TEMPS, _SCORES)},
                malformed={"τ as text": (("0.2", "intermediate", _TEMPS, _SCORES), "a number"),
                           "reading as a number": ((0.2, 2, _TEMPS, _SCORES), "'lowest', 'intermediate' or"),
                           "scores too short": ((0.2, "intermediate", _TEMPS, _SCORES[:2]), "same length"),
                           "scores as a dict": ((0.2, "intermediate", _TEMPS, dict(zip(_TEMPS, _SCORES))),
                                                "same length")})


# chapter 2 ------------------------------------------------------------------------------------------------------


def _dino(s, t, c, ts, tt, centre=True, skip_same=True, mean=True):
    """The DINO loss, and its usual mistakes when a flag is off."""
    tp = [F.softmax((o - c * centre) / tt, -1) for o in t]
    sp = [F.log_softmax(o / ts, -1) for o in s]
    terms = [-(ti * sj).sum(-1).mean() for i, ti in enumerate(tp) for j, sj in enumerate(sp)
             if not (skip_same and i == j)]
    return sum(terms) / len(terms) if mean else sum(terms)


def _dino_per_image(s, t, c, ts, tt):  # one pair of views, not averaged over the batch: shape (B,)
    return -(F.softmax((t[0] - c) / tt, -1) * F.log_softmax(s[1] / ts, -1)).sum(-1)


def _dino_loss():
    return Case(right=(_dino,),
                wrong={"temperatures swapped": (lambda s, t, c, ts, tt: _dino(s, t, c, tt, ts),),
                       "not centred": (lambda s, t, c, ts, tt: _dino(s, t, c, ts, tt, centre=False),),
                       "same-view pairs kept": (lambda s, t, c, ts, tt: _dino(s, t, c, ts, tt, skip_same=False),),
                       "summed over pairs": (lambda s, t, c, ts, tt: _dino(s, t, c, ts, tt, mean=False),),
                       "NaN": (lambda *a: torch.tensor(float("nan")),)},
                malformed={"one loss per image": ((_dino_per_image,), "one number"),
                           "views as one tensor": ((lambda s, t, c, ts, tt: F.softmax((t - c) / tt, -1),),
                                                   "student_out a list of"),
                           "not a function": (("dino_loss",), "function itself")})


def _center_update():
    from helpers.methods.dino import update_center

    def batch_mean(t):
        return torch.cat(t).mean(0, keepdim=True)
    return Case(right=(update_center,),
                wrong={"weights swapped": (lambda c, t, m: c * (1 - m) + batch_mean(t) * m,),
                       "first view only": (lambda c, t, m: c * m + t[0].mean(0, keepdim=True) * (1 - m),),
                       "no momentum": (lambda c, t, m: batch_mean(t),),
                       "centre unchanged": (lambda c, t, m: c,)},
                malformed={"shape (K,)": ((lambda c, t, m: (c * m + batch_mean(t) * (1 - m)).squeeze(0),),
                                          r"tensor of shape \(1, "),
                           "teacher_out as a tensor": ((lambda c, t, m: c * m + t.mean(0, keepdim=True) * (1 - m),),
                                                       "teacher_out a list of"),
                           "a numpy array": ((lambda c, t, m: update_center(c, t, m).numpy(),), "tensor of shape")})


def _collapse_prediction():
    return Case(right=("one dimension", "uniform"),
                wrong={"swapped": ("uniform", "one dimension"), "both uniform": ("uniform", "uniform"),
                       "both one dimension": ("one dimension", "one dimension")},
                malformed={"abbreviated": (("one", "uniform"), "is one of"),
                           "numbers": ((1, 0), "is one of"),
                           "a list": ((["one dimension"], "uniform"), "is one of")})


_SHARES = pd.DataFrame({"model": ["DINO ViT"] * 2 + ["random ViT"] * 2, "structure": ["optic disc", "lesions"] * 2,
                        "ratio": [3.1, 1.4, 1.0, 1.0]})
_READING = {"optic disc": 3.1, "lesions": 1.4}


def _attention_reading():
    return Case(right=("optic disc", _READING, _SHARES),
                wrong={"lesions": ("lesions", _READING, _SHARES), "neither": ("neither", _READING, _SHARES),
                       "the random ViT's ratios": ("neither", {"optic disc": 1.0, "lesions": 1.0}, _SHARES),
                       "ratios swapped": ("lesions", {"optic disc": 1.4, "lesions": 3.1}, _SHARES)},
                malformed={"reading as a list": (("optic disc", [3.1, 1.4], _SHARES), "maps 'optic disc' and"),
                           "ratios as text": (("optic disc", {"optic disc": "3.1", "lesions": "1.4"}, _SHARES),
                                              r"\(numbers\)"),
                           "structure as a number": ((1, _READING, _SHARES), "'optic disc', 'lesions' or 'neither'"),
                           "a table without the model": (("optic disc", _READING, _SHARES[_SHARES.model != "DINO ViT"]),
                                                         "one row per structure")})


# chapter 3 ------------------------------------------------------------------------------------------------------


def _masking(x, ids, keep, last=False):
    """MAE's masking for a given shuffle ``ids`` and count ``keep`` (``last``: keep the end of the shuffle)."""
    mask = torch.ones(x.shape[:2])
    mask[:, :keep] = 0
    restore = torch.argsort(ids, 1)
    kept_ids = ids[:, -keep:] if last and keep else ids[:, :keep]
    return torch.gather(x, 1, kept_ids[:, :, None].expand(-1, -1, x.shape[2])), torch.gather(mask, 1, restore), restore


def _shuffle(x):
    return torch.argsort(torch.rand(x.shape[:2]), 1)


def _keep(x, ratio):
    return int(x.shape[1] * (1 - ratio))


def _random_masking():
    from helpers.methods.mae import random_masking

    def inverted(x, r):
        kept, mask, restore = random_masking(x, r)
        return kept, 1 - mask, restore

    def bool_mask(x, r):
        kept, mask, restore = random_masking(x, r)
        return kept, mask.bool(), restore

    def shuffle_returned(x, r):  # ids_shuffle where ids_restore belongs
        ids = _shuffle(x)
        return _masking(x, ids, _keep(x, r))[:2] + (ids,)
    return Case(right=(random_masking,),
                wrong={"round()": (lambda x, r: _masking(x, _shuffle(x), round(x.shape[1] * (1 - r))),),
                       "mask inverted": (inverted,),
                       "one order for the batch": (lambda x, r: _masking(x, _shuffle(x[:1]).expand(x.shape[:2]),
                                                                         _keep(x, r)),),
                       "ids_shuffle returned": (shuffle_returned,),
                       "the end of the shuffle kept": (lambda x, r: _masking(x, _shuffle(x), _keep(x, r), last=True),)},
                malformed={"two tensors": ((lambda x, r: random_masking(x, r)[:2],), "three tensors"),
                           "a dict": ((lambda x, r: dict(zip("kmi", random_masking(x, r))),), "three tensors"),
                           "numpy arrays": ((lambda x, r: tuple(o.numpy() for o in random_masking(x, r)),),
                                            "three tensors"),
                           "a bool mask": ((bool_mask,), "float tensor"),
                           "kept flattened": ((lambda x, r: (random_masking(x, r)[0].flatten(),)
                                               + random_masking(x, r)[1:],), "tokens per sample; got kept of shape")})


def _ratio_zero_loss():
    return Case(right=(0.0, 0.0),
                wrong={"every patch's error": (1.0, 0.0), "a quarter": (0.25, 0.0),
                       "measured with masking": (0.0, 0.12), "measured NaN": (0.0, float("nan"))},
                malformed={"text": (("0", 0.0), "one finite number"), "a list": (([0.0], 0.0), "one finite number"),
                           "NaN": ((float("nan"), 0.0), "one finite number"),
                           "measured as text": ((0.0, "0.0"), "one number")})


def _layer_decay():
    from helpers.transfer import layer_decay_lrs
    return Case(right=(layer_decay_lrs,),
                wrong={"reversed": (lambda b, d, n: layer_decay_lrs(b, d, n)[::-1],),
                       "one layer too deep": (lambda b, d, n: layer_decay_lrs(b, d, n) * d,),
                       "one layer too shallow": (lambda b, d, n: layer_decay_lrs(b, d, n) / d,),
                       "no decay": (lambda b, d, n: [b] * (n + 2),),
                       "the head left out": (lambda b, d, n: layer_decay_lrs(b, d, n)[:-1],)},
                malformed={"a dict": ((lambda b, d, n: dict(enumerate(layer_decay_lrs(b, d, n))),), "list or array of"),
                           "text": ((lambda b, d, n: [str(v) for v in layer_decay_lrs(b, d, n)] + ["head"],),
                                    "list or array of"),
                           "a model, not n_blocks": ((lambda b, d, model: [b] * (len(model.blocks) + 2),),
                                                     r"called as fn\(base_lr, decay, n_blocks\)")})


# chapter 4 ------------------------------------------------------------------------------------------------------


def _at(a, t):
    a = a[torch.as_tensor(t).long()]
    return a.view(-1, 1, 1, 1) if a.ndim else a


def _q_sample():
    from helpers.methods import diffusion as D
    b = D.betas(1000, "cosine")
    return Case(right=(D.add_noise,),
                wrong={"no square roots": (lambda x0, n, t, a: _at(a, t) * x0 + (1 - _at(a, t)) * n,),
                       "weights swapped": (lambda x0, n, t, a: (1 - _at(a, t)).sqrt() * x0 + _at(a, t).sqrt() * n,),
                       "one step with β": (lambda x0, n, t, a: (1 - _at(b, t)).sqrt() * x0 + _at(b, t).sqrt() * n,),
                       "noise left out": (lambda x0, n, t, a: _at(a, t).sqrt() * x0,)},
                malformed={"t.long() on an int": ((lambda x0, n, t, a: D.add_noise(x0, n, t.long(), a),), "plain int"),
                           "abar[t] not reshaped": ((lambda x0, n, t, a: a[t].sqrt() * x0 + (1 - a[t]).sqrt() * n,),
                                                    "one timestep per sample"),
                           "a numpy array": ((lambda x0, n, t, a: D.add_noise(x0, n, t, a).numpy(),),
                                             "shaped like x0")})


def _latent_scale():
    from helpers.methods import diffusion as D
    return Case(right=(D.latent_scale,),
                wrong={"the std": (lambda z: float(z.std()),), "1 / variance": (lambda z: float(1 / z.var()),),
                       "1 / mean |z|": (lambda z: float(1 / z.abs().mean()),),
                       "Stable Diffusion's constant": (lambda z: 0.18215,), "NaN": (lambda z: float("nan"),)},
                malformed={"one per channel": ((lambda z: 1 / z.std(dim=(0, 2, 3)),), "one number"),
                           "a list": ((lambda z: [D.latent_scale(z)] * 2,), "one number"),
                           "text": ((lambda z: "0.4",), "one number")})


def _guidance():
    from helpers.methods import diffusion as D
    right = "the unconditional model"
    return Case(right=(D.guided, right),
                wrong={"from the conditional": (lambda c, u, s: c + s * (c - u), right),
                       "unconditional term missing": (lambda c, u, s: s * c, right),
                       "direction reversed": (lambda c, u, s: u + s * (u - c), right),
                       "the mean, whatever s": (lambda c, u, s: (c + u) / 2, right),
                       "the conditional model": (D.guided, "the conditional model"),
                       "pure noise": (D.guided, "pure noise"), "the mean of both": (D.guided, "the mean of both")},
                malformed={"returns a float": ((lambda c, u, s: 0.0, right), "shaped like eps_cond"),
                           "two arguments": ((lambda c, s: c * s, right), r"fn\(eps_cond, eps_uncond, scale\)"),
                           "answer as a number": ((D.guided, 0), "one of")})


# chapter 5 ------------------------------------------------------------------------------------------------------


def _flair_loss():
    from helpers.methods import flair as FL

    def hard(lg, t):
        return (F.cross_entropy(lg, torch.arange(len(lg))) + F.cross_entropy(lg.t(), torch.arange(len(lg)))) / 2
    return Case(right=(FL.flair_loss,),
                wrong={"one direction": (lambda lg, t: F.cross_entropy(lg.t(), t),),
                       "summed": (lambda lg, t: F.cross_entropy(lg, t) + F.cross_entropy(lg.t(), t),),
                       "hard targets": (hard,),
                       "binary cross-entropy": (lambda lg, t: F.binary_cross_entropy_with_logits(lg, t),)},
                malformed={"one loss per text": ((lambda lg, t: F.cross_entropy(lg, t, reduction="none"),),
                                                 "one number"),
                           "a Python float": ((lambda lg, t: float(FL.flair_loss(lg, t)),), r"one number \(a 0-d"),
                           "one argument": ((lambda lg: F.cross_entropy(lg, lg),), r"fn\(logits_per_text, target\)")})


def _prototype():
    return Case(right=(lambda e: e.mean(0),),
                wrong={"re-normalised": (lambda e: e.mean(0) / e.mean(0).norm(),), "summed": (lambda e: e.sum(0),),
                       "the first description": (lambda e: e[0],), "the median": (lambda e: e.median(0).values,)},
                malformed={"mean over dim 1": ((lambda e: e.mean(1),), "embedding's size"),
                           "a list": ((lambda e: e.mean(0).tolist(),), "embedding's size"),
                           "keepdim": ((lambda e: e.mean(0, keepdim=True),), r"\(8,\)")})


def _amd_score(descriptions):
    return 0.8 if any("drusen" in d for d in descriptions) else 0.5


def _knowledge_prompts():
    return Case(right=(["macular drusen", "yellow drusen"], _amd_score, 0.5, 0.8),
                wrong={"the name": (["age-related macular degeneration"], _amd_score, 0.5, 0.8),
                       "too vague": (["a sick eye"], _amd_score, 0.5, 0.8),
                       "the abbreviation": (["AMD"], _amd_score, 0.5, 0.8),
                       "the name, capitalised": (["Macular Degeneration, dry form"], _amd_score, 0.5, 0.8)},
                malformed={"one string": (("drusen", _amd_score, 0.5, 0.8), "list of phrases"),
                           "an empty list": (([], _amd_score, 0.5, 0.8), "list of phrases"),
                           "a number": ((5, _amd_score, 0.5, 0.8), "list of phrases"),
                           "a number in the list": ((["drusen", 3], _amd_score, 0.5, 0.8), "list of phrases")})


# chapter 6 ------------------------------------------------------------------------------------------------------


def _fold():
    return Case(right=(lambda m, s, c, b: (c / s, b - (c / s) @ m),),
                wrong={"times the scale": (lambda m, s, c, b: (c * s, b - (c * s) @ m),),
                       "bias unchanged": (lambda m, s, c, b: (c / s, b),),
                       "mean added": (lambda m, s, c, b: (c / s, b + (c / s) @ m),),
                       "bias without the scale": (lambda m, s, c, b: (c / s, b - c @ m),)},
                malformed={"one array": ((lambda m, s, c, b: c / s,), "two arrays"),
                           "three arrays": ((lambda m, s, c, b: (c / s, b, m),), "two arrays"),
                           "ragged": ((lambda m, s, c, b: ([[1.0, 2.0], [3.0]], b),), "two arrays of numbers"),
                           "a dict": ((lambda m, s, c, b: {"weight": c / s, "bias": b},), "two arrays")})


_MEASURED = {"lp": 0.0, "ft": 0.1, "lpft": 0.03}


def _distortion_prediction():
    return Case(right=("ft", _MEASURED),
                wrong={"lp": ("lp", _MEASURED), "lpft": ("lpft", _MEASURED), "LP-FT": ("LP-FT", _MEASURED),
                       "LP": (" LP ", _MEASURED)},
                malformed={"another strategy": (("zero-shot", _MEASURED), '"lp", "ft" or "lpft"'),
                           "a number": ((3, _MEASURED), '"lp", "ft" or "lpft"'),
                           "measured as a list": (("ft", [0.0, 0.1, 0.03]), "a dict"),
                           "measured as text": (("ft", {"lp": "none", "ft": "big"}), "a dict")})


def _tn_fp(y, p):  # the two counts, not the share
    return ((p == 0) & (y == 0)).sum(), ((p == 1) & (y == 0)).sum()


def _specificity():
    return Case(right=(lambda y, p: float((p[y == 0] == 0).mean()),),
                wrong={"sensitivity": (lambda y, p: float((p[y == 1] == 1).mean()),),
                       "accuracy": (lambda y, p: float((p == y).mean()),),
                       "false-positive rate": (lambda y, p: float((p[y == 0] == 1).mean()),),
                       "a count": (lambda y, p: int(((p == 0) & (y == 0)).sum()),),
                       "negative predictive value": (lambda y, p: float((y[p == 0] == 0).mean()),)},
                malformed={"one value per eye": ((lambda y, p: p[y == 0] == 0,), "one number"),
                           "a (tn, fp) pair": ((_tn_fp,), "one number"),
                           "lists assumed": ((lambda y, p: y.count(0),), "numpy arrays")})


CASES = {"check_dr_rule": _dr_rule(), "check_hr_answers": _hr_answers(), "check_site_shortcut": _site_shortcut(),
         "check_nt_xent": _nt_xent_case(), "check_learned_invariance": _learned_invariance(),
         "check_colour_shortcut": _colour_shortcut(), "check_temperature_answer": _temperature_answer(),
         "check_dino_loss": _dino_loss(), "check_center_update": _center_update(),
         "check_collapse_prediction": _collapse_prediction(), "check_attention_reading": _attention_reading(),
         "check_random_masking": _random_masking(), "check_ratio_zero_loss": _ratio_zero_loss(),
         "check_layer_decay": _layer_decay(), "check_q_sample": _q_sample(), "check_latent_scale": _latent_scale(),
         "check_guidance": _guidance(), "check_flair_loss": _flair_loss(), "check_prototype": _prototype(),
         "check_knowledge_prompts": _knowledge_prompts(), "check_fold": _fold(),
         "check_distortion_prediction": _distortion_prediction(), "check_specificity": _specificity()}

WRONG = [(name, label) for name, case in CASES.items() for label in case.wrong]
MALFORMED = [(name, label) for name, case in CASES.items() for label in case.malformed]


def test_every_check_is_in_the_table_with_three_wrong_and_one_malformed_answer():
    exported = {n for n in dir(checks) if n.startswith("check_")}
    assert exported - set(CASES) == set(), "add these checks to CASES in tests/test_checks_reject.py"
    assert set(CASES) - exported == set(), "CASES names checks that helpers.checks no longer exports"
    thin = {n: (len(c.wrong), len(c.malformed)) for n, c in CASES.items() if len(c.wrong) < 3 or not c.malformed}
    assert not thin, f"(wrong, malformed) answers per check, want at least (3, 1): {thin}"


@pytest.mark.parametrize("name", sorted(CASES))
def test_right_answer_is_accepted(name):
    assert getattr(checks, name)(*CASES[name].right) is True


@pytest.mark.parametrize("name,label", WRONG, ids=[f"{n}-{lab}" for n, lab in WRONG])
def test_wrong_answer_is_rejected(name, label):
    with pytest.raises(checks.ExerciseError):
        getattr(checks, name)(*CASES[name].wrong[label])


@pytest.mark.parametrize("name,label", MALFORMED, ids=[f"{n}-{lab}" for n, lab in MALFORMED])
def test_malformed_answer_gets_a_message_saying_what_is_expected(name, label):
    args, expected = CASES[name].malformed[label]
    with pytest.raises(checks.ExerciseError, match=expected):  # a bare TypeError/KeyError would fail here
        getattr(checks, name)(*args)


def test_an_error_in_the_students_function_is_chained_to_the_message():
    with pytest.raises(checks.ExerciseError, match="ZeroDivisionError") as info:
        checks.check_specificity(lambda y, p: 1 / 0)
    assert isinstance(info.value.__cause__, ZeroDivisionError)  # the student's traceback is still shown


def test_a_stub_is_still_pending_through_the_wrapper():
    assert checks.check_fold(lambda *a: _raises(NotImplementedError)) is False

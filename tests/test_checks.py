"""Every exercise check accepts a right answer, rejects a wrong one with a hint, and reports a stub as pending."""
import pytest
import torch

from helpers import checks
from helpers.views import FundusViews


def test_dr_rule_check():
    from helpers.synthretina import dr_grade_rule
    assert checks.check_dr_rule(lambda c: dr_grade_rule(c["n_microaneurysms"], c["n_haemorrhages"], c["n_exudates"],
                                                        c["n_neovascularisation"]))
    with pytest.raises(checks.ExerciseError, match="most severe"):
        checks.check_dr_rule(lambda c: 0)

    def stub(c):
        raise NotImplementedError
    assert checks.check_dr_rule(stub) is False


def test_hr_answers_and_site_shortcut_checks():
    assert checks.check_hr_answers({"a": 2, "b": 3, "c": 4})
    for wrong in ({"a": 2, "b": 2, "c": 4}, {"a": 1, "b": 3, "c": 4}, {"a": 2, "b": 3, "c": 3}):
        with pytest.raises(checks.ExerciseError, match="not yet right"):
            checks.check_hr_answers(wrong)
    for malformed in ([2, 3, 4], {"a": 2, "b": 3}, "2, 3, 4"):
        with pytest.raises(checks.ExerciseError, match="one grade per eye"):
            checks.check_hr_answers(malformed)
    with pytest.raises(checks.ExerciseError, match="whole number from 0 to 4"):
        checks.check_hr_answers({"a": "2", "b": 3.5, "c": 4})
    assert checks.check_site_shortcut(0.9, 0.22)
    with pytest.raises(checks.ExerciseError, match="most frequent grade"):
        checks.check_site_shortcut(0.3, 0.22)
    with pytest.raises(checks.ExerciseError, match="chance"):
        checks.check_site_shortcut(0.9, 0.6)


def test_learned_invariance_check_follows_the_run():
    safe, bad = {"dr": 0.4, "amd": 0.8}, {"dr": 0.3, "amd": 0.6}
    assert checks.check_learned_invariance("yes", safe, bad)
    with pytest.raises(checks.ExerciseError, match="look again"):
        checks.check_learned_invariance("no", safe, bad)
    assert checks.check_learned_invariance("no", bad, safe)  # a run where the destroying views did better
    assert checks.check_learned_invariance("no", safe, {"dr": 0.401, "amd": 0.8})  # too close to call
    with pytest.raises(checks.ExerciseError, match="yes"):
        checks.check_learned_invariance("maybe", safe, bad)
    with pytest.raises(checks.ExerciseError, match="finite"):
        checks.check_learned_invariance("yes", {"dr": float("nan")}, bad)


def test_colour_shortcut_check_wants_every_camera_change_off_and_the_runs_numbers():
    import pandas as pd
    colour = pd.DataFrame({"SimCLR (camera changes)": [0.62, 0.40], "no camera change": [0.81, 0.41]},
                          index=["site_id", "dr_grade"])
    off = FundusViews(gain=0, gamma=0, noise=0, blur_p=0)
    assert checks.check_colour_shortcut(off, 0.62, 0.81, "without", colour)
    with pytest.raises(checks.ExerciseError, match="gain"):
        checks.check_colour_shortcut(FundusViews(gamma=0, noise=0, blur_p=0), 0.62, 0.81, "without", colour)
    with pytest.raises(checks.ExerciseError, match="swapped"):
        checks.check_colour_shortcut(off, 0.81, 0.62, "without", colour)
    with pytest.raises(checks.ExerciseError, match="site_id row"):
        checks.check_colour_shortcut(off, 0.5, 0.5, "neither", colour)  # any finite pair is no longer enough
    for wrong in ("with", "neither"):
        with pytest.raises(checks.ExerciseError, match="compare the two site probes"):
            checks.check_colour_shortcut(off, 0.62, 0.81, wrong, colour)
    with pytest.raises(checks.ExerciseError, match="'with', 'without' or 'neither'"):
        checks.check_colour_shortcut(off, 0.62, 0.81, "less", colour)
    with pytest.raises(checks.ExerciseError, match="numbers"):
        checks.check_colour_shortcut(off, float("nan"), 0.81, "without", colour)
    with pytest.raises(checks.ExerciseError, match="FundusViews"):
        checks.check_colour_shortcut({"gain": 0}, 0.62, 0.81, "without", colour)
    close = colour.assign(**{"no camera change": [0.625, 0.41]})
    assert checks.check_colour_shortcut(off, 0.62, 0.625, "neither", close)
    with pytest.raises(checks.ExerciseError):
        checks.check_colour_shortcut(off, 0.62, 0.625, "without", close)


def test_temperature_check_reads_the_students_own_sweep():
    temps, scores = [0.1, 0.2, 0.5], [0.50, 0.53, 0.47]
    assert checks.check_temperature_answer(0.2, "intermediate", temps, scores)
    with pytest.raises(checks.ExerciseError, match="highest probe"):
        checks.check_temperature_answer(0.1, "intermediate", temps, scores)
    with pytest.raises(checks.ExerciseError, match="intermediate"):
        checks.check_temperature_answer(0.2, "lowest", temps, scores)
    # the same answer is wrong for a sweep whose best τ is the lowest
    with pytest.raises(checks.ExerciseError):
        checks.check_temperature_answer(0.2, "intermediate", temps, [0.55, 0.53, 0.47])
    assert checks.check_temperature_answer(0.1, "lowest", [0.5, 0.1, 0.2], [0.47, 0.55, 0.53])  # unsorted input


def test_dino_loss_check_accepts_the_loss_and_names_the_missing_centring():
    import torch.nn.functional as F
    from helpers.methods.dino import dino_loss
    assert checks.check_dino_loss(dino_loss)

    def uncentred(s, t, c, ts, tt):
        return dino_loss(s, t, c * 0, ts, tt)
    with pytest.raises(checks.ExerciseError, match="centred"):
        checks.check_dino_loss(uncentred)

    def with_same_view(s, t, c, ts, tt):  # keeps the pairs (teacher view i, student view i)
        tp = [F.softmax((o - c) / tt, -1) for o in t]
        terms = [-(ti * F.log_softmax(sj / ts, -1)).sum(-1).mean() for ti in tp for sj in s]
        return sum(terms) / len(terms)
    with pytest.raises(checks.ExerciseError, match="own view"):
        checks.check_dino_loss(with_same_view)

    def stub(*a):
        raise NotImplementedError
    assert checks.check_dino_loss(stub) is False


def test_center_update_check():
    import torch
    from helpers.methods.dino import update_center
    assert checks.check_center_update(update_center)
    with pytest.raises(checks.ExerciseError, match="old centre"):
        checks.check_center_update(lambda c, t, m: c * (1 - m) + torch.cat(t).mean(0, keepdim=True) * m)
    with pytest.raises(checks.ExerciseError, match="all"):
        checks.check_center_update(lambda c, t, m: c * m + t[0].mean(0, keepdim=True) * (1 - m))
    with pytest.raises(checks.ExerciseError, match="shape"):
        checks.check_center_update(lambda c, t, m: 0.0)


def test_collapse_prediction_and_attention_reading_checks():
    assert checks.check_collapse_prediction("one dimension", "uniform")
    with pytest.raises(checks.ExerciseError, match="dominant"):
        checks.check_collapse_prediction("uniform", "uniform")
    with pytest.raises(checks.ExerciseError, match="soft"):
        checks.check_collapse_prediction("one dimension", "one dimension")
    with pytest.raises(checks.ExerciseError, match="one of"):
        checks.check_collapse_prediction("nothing", "uniform")
    assert checks.check_collapse_prediction(None, "uniform") is False
    import pandas as pd
    shares = pd.DataFrame({"model": ["DINO ViT"] * 2 + ["random ViT"] * 2, "structure": ["optic disc", "lesions"] * 2,
                           "ratio": [3.1, 1.4, 1.0, 1.0]})
    reading = {"optic disc": 3.1, "lesions": 1.4}
    assert checks.check_attention_reading("optic disc", reading, shares)
    for wrong in ("lesions", "neither"):
        with pytest.raises(checks.ExerciseError, match="compare"):
            checks.check_attention_reading(wrong, reading, shares)
    with pytest.raises(checks.ExerciseError, match="shares table"):
        checks.check_attention_reading("optic disc", {"optic disc": 9.0, "lesions": 1.0}, shares)  # not the run's
    with pytest.raises(checks.ExerciseError, match="maps"):
        checks.check_attention_reading("lesions", {"lesions": 1.0}, shares)
    with pytest.raises(checks.ExerciseError, match="maps"):
        checks.check_attention_reading("lesions", [3.1, 1.4], shares)
    with pytest.raises(checks.ExerciseError, match="'neither'"):
        checks.check_attention_reading("disc", reading, shares)
    # 1.039 vs 1.038 is no finding: the answer is "neither", and a structure is wrong
    tie = shares.assign(ratio=[1.039, 1.038, 1.0, 1.0])
    assert checks.check_attention_reading("neither", {"optic disc": 1.039, "lesions": 1.038}, tie)
    with pytest.raises(checks.ExerciseError, match="neither"):
        checks.check_attention_reading("optic disc", {"optic disc": 1.039, "lesions": 1.038}, tie)


def test_random_masking_check_accepts_the_library_and_names_each_mistake():
    import torch
    from helpers.methods.mae import random_masking
    assert checks.check_random_masking(lambda x, r: random_masking(x, r))

    def masking_with(x, ids, keep):  # random_masking's steps for a given shuffle `ids` and count `keep`
        mask = torch.ones(x.shape[:2])
        mask[:, :keep] = 0
        restore = torch.argsort(ids, 1)
        return torch.gather(x, 1, ids[:, :keep, None].expand(-1, -1, x.shape[2])), torch.gather(mask, 1, restore), \
            restore

    def rounded(x, r):  # round() instead of int(): 36 · 0.1 = 3.6 -> 4 tokens
        return masking_with(x, torch.argsort(torch.rand(x.shape[:2]), 1), round(x.shape[1] * (1 - r)))
    with pytest.raises(checks.ExerciseError, match="int"):
        checks.check_random_masking(rounded)

    def inverted(x, r):
        kept, mask, restore = random_masking(x, r)
        return kept, 1 - mask, restore
    with pytest.raises(checks.ExerciseError, match="removed"):
        checks.check_random_masking(inverted)

    def same_order(x, r):  # one shuffle for the whole batch
        b, n, _ = x.shape
        return masking_with(x, torch.argsort(torch.rand(1, n), 1).expand(b, n), int(n * (1 - r)))
    with pytest.raises(checks.ExerciseError, match="own random order"):
        checks.check_random_masking(same_order)

    def shuffle_not_restore(x, r):  # returns ids_shuffle where ids_restore belongs
        ids = torch.argsort(torch.rand(x.shape[:2]), 1)
        kept, mask, _ = masking_with(x, ids, int(x.shape[1] * (1 - r)))
        return kept, mask, ids
    with pytest.raises(checks.ExerciseError, match="shuffle"):
        checks.check_random_masking(shuffle_not_restore)

    def stub(x, r):
        raise NotImplementedError
    assert checks.check_random_masking(stub) is False


def test_ratio_zero_and_layer_decay_checks():
    from helpers.transfer import layer_decay_lrs
    assert checks.check_ratio_zero_loss(0.0, 0.0)
    with pytest.raises(checks.ExerciseError, match="which patches"):
        checks.check_ratio_zero_loss(0.02, 0.0)
    with pytest.raises(checks.ExerciseError, match="measured"):
        checks.check_ratio_zero_loss(0.0, 0.3)
    assert checks.check_ratio_zero_loss(None, 0.0) is False
    assert checks.check_layer_decay(layer_decay_lrs)
    with pytest.raises(checks.ExerciseError, match="reversed"):
        checks.check_layer_decay(lambda b, d, n: layer_decay_lrs(b, d, n)[::-1])
    with pytest.raises(checks.ExerciseError, match="off by one"):
        checks.check_layer_decay(lambda b, d, n: layer_decay_lrs(b, d, n) * d)
    with pytest.raises(checks.ExerciseError, match="groups"):
        checks.check_layer_decay(lambda b, d, n: layer_decay_lrs(b, d, n)[1:])
    with pytest.raises(checks.ExerciseError, match="expected"):
        checks.check_layer_decay(lambda b, d, n: [b] * (n + 2))


def test_q_sample_check_accepts_the_library_and_names_each_mistake():
    from helpers.methods import diffusion as D

    def stub(x0, noise, t, abar):
        raise NotImplementedError

    def per_sample(abar, t, like):
        a = abar[torch.as_tensor(t).long()]
        return a.view(-1, 1, 1, 1) if a.ndim else a

    assert checks.check_q_sample(D.add_noise)
    assert checks.check_q_sample(stub) is False
    with pytest.raises(checks.ExerciseError, match="square roots"):
        checks.check_q_sample(lambda x0, n, t, abar: per_sample(abar, t, x0) * x0 + (1 - per_sample(abar, t, x0)) * n)
    with pytest.raises(checks.ExerciseError, match="swapped"):
        checks.check_q_sample(lambda x0, n, t, abar: (1 - per_sample(abar, t, x0)).sqrt() * x0
                              + per_sample(abar, t, x0).sqrt() * n)
    with pytest.raises(checks.ExerciseError, match="cumulative"):
        b = D.betas(1000, "cosine")
        checks.check_q_sample(lambda x0, n, t, abar: (1 - per_sample(b, t, x0)).sqrt() * x0
                              + per_sample(b, t, x0).sqrt() * n)
    with pytest.raises(checks.ExerciseError, match="shaped like x0"):
        checks.check_q_sample(lambda x0, n, t, abar: abar[t].sqrt() * x0.flatten(1).T + 0)


def test_latent_scale_and_guidance_checks():
    from helpers.methods import diffusion as D
    assert checks.check_latent_scale(D.latent_scale)
    with pytest.raises(checks.ExerciseError, match="standard deviation; the scale"):
        checks.check_latent_scale(lambda z: float(z.std()))
    with pytest.raises(checks.ExerciseError, match="variance over-corrects"):
        checks.check_latent_scale(lambda z: float(1 / z.var()))
    with pytest.raises(checks.ExerciseError, match="one number"):
        checks.check_latent_scale(lambda z: float(1 / z.abs().mean()))
    assert checks.check_guidance(D.guided, "the unconditional model")
    assert checks.check_guidance(D.guided, None) is False
    with pytest.raises(checks.ExerciseError, match="put s = 0"):
        checks.check_guidance(D.guided, "the conditional model")
    with pytest.raises(checks.ExerciseError, match="one of"):
        checks.check_guidance(D.guided, "something else")
    with pytest.raises(checks.ExerciseError, match="start from the unconditional"):
        checks.check_guidance(lambda c, u, s: c + s * (c - u), "the unconditional model")
    with pytest.raises(checks.ExerciseError, match="unconditional term is missing"):
        checks.check_guidance(lambda c, u, s: s * c, "the unconditional model")


def test_flair_loss_prototype_and_prompt_checks():
    import torch.nn.functional as F
    from helpers.methods import flair as FL
    assert checks.check_flair_loss(FL.flair_loss)
    with pytest.raises(checks.ExerciseError, match="one direction"):
        checks.check_flair_loss(lambda lg, t: F.cross_entropy(lg, t))
    with pytest.raises(checks.ExerciseError, match="averaged, not summed"):
        checks.check_flair_loss(lambda lg, t: F.cross_entropy(lg, t) + F.cross_entropy(lg.t(), t))
    with pytest.raises(checks.ExerciseError, match="soft target"):
        checks.check_flair_loss(lambda lg, t: (F.cross_entropy(lg, torch.arange(len(lg)))
                                               + F.cross_entropy(lg.t(), torch.arange(len(lg)))) / 2)
    assert checks.check_prototype(lambda e: e.mean(0))
    with pytest.raises(checks.ExerciseError, match="without re-normalising"):
        checks.check_prototype(lambda e: e.mean(0) / e.mean(0).norm())
    with pytest.raises(checks.ExerciseError, match="not the sum"):
        checks.check_prototype(lambda e: e.sum(0))
    assert checks.check_prototype(None) is False
    score = lambda d: 0.8 if any("drusen" in x for x in d) else 0.5  # noqa: E731
    assert checks.check_knowledge_prompts(["macular drusen", "yellow drusen"], score, baseline=0.5, reference=0.8)
    with pytest.raises(checks.ExerciseError, match="not the diagnosis' name"):
        checks.check_knowledge_prompts(["age-related macular degeneration"], score, baseline=0.5, reference=0.8)
    with pytest.raises(checks.ExerciseError, match="findings the reports do name"):
        checks.check_knowledge_prompts(["a sick eye"], score, baseline=0.5, reference=0.8)
    with pytest.raises(checks.ExerciseError, match="list of phrases"):
        checks.check_knowledge_prompts("drusen", score, baseline=0.5, reference=0.8)
    assert checks.check_knowledge_prompts(["a sick eye"], score, baseline=0.5, reference=0.5) is False  # untrained


def test_fold_distortion_and_specificity_checks():
    import numpy as np
    assert checks.check_fold(lambda m, s, c, b: (c / s, b - (c / s) @ m))
    with pytest.raises(checks.ExerciseError, match="divides by the scale"):
        checks.check_fold(lambda m, s, c, b: (c * s, b - (c * s) @ m))
    with pytest.raises(checks.ExerciseError, match="absorb the mean"):
        checks.check_fold(lambda m, s, c, b: (c / s, b))
    with pytest.raises(checks.ExerciseError, match="two arrays"):
        checks.check_fold(lambda m, s, c, b: c / s)
    assert checks.check_distortion_prediction("ft", {"lp": 0.0, "ft": 0.1, "lpft": 0.03})
    assert checks.check_distortion_prediction("FT", {"lp": 0.0, "ft": 0.01, "lpft": 0.03})  # right, run disagrees
    with pytest.raises(checks.ExerciseError, match="never changes the encoder"):
        checks.check_distortion_prediction("lp", {})
    with pytest.raises(checks.ExerciseError, match="random head"):
        checks.check_distortion_prediction("lp-ft", {})
    with pytest.raises(checks.ExerciseError, match='"lp", "ft" or "lpft"'):
        checks.check_distortion_prediction("zero-shot", {})
    assert checks.check_specificity(lambda y, p: float((p[y == 0] == 0).mean()))
    with pytest.raises(checks.ExerciseError, match="sensitivity"):
        checks.check_specificity(lambda y, p: float((p[y == 1] == 1).mean()))
    with pytest.raises(checks.ExerciseError, match="accuracy over every eye"):
        checks.check_specificity(lambda y, p: float((np.asarray(p) == np.asarray(y)).mean()))
    assert checks.check_specificity(None) is False

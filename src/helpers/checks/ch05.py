"""Checks for chapter 5's exercises (see :mod:`helpers.checks`)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..methods.flair import flair_loss, soft_targets
from .core import ExerciseError, _call, _describe, _finite, _scalar, _tensor, exercise, passed


@exercise("write FLAIR's loss")
def check_flair_loss(fn) -> bool:
    """Chapter 5, exercise 1: ``fn(logits_per_text, target)`` = the symmetric cross-entropy with soft targets, as
    :func:`helpers.methods.flair.flair_loss`."""
    for n, cats in [(5, [0, 1, 2, 3, 4]), (6, [0, 1, 0, 2, 1, 0])]:
        g = torch.Generator().manual_seed(n)
        logits = torch.randn(n, n, generator=g) * 3
        target = soft_targets(torch.tensor(cats))
        got = _call(fn, logits.clone(), target.clone(), called=f"fn(logits_per_text, target) with two ({n}, {n}) "
                    "tensors: the text-image logits and the soft target (each row sums to 1)")
        want = flair_loss(logits, target)
        if not torch.is_tensor(got) or got.numel() != 1:
            raise ExerciseError(f"return one number (a 0-d tensor): the loss of the batch; got {_describe(got)}")
        got = got.detach().float().reshape(())
        if torch.allclose(got, want, atol=1e-5):
            continue
        if torch.allclose(got, F.cross_entropy(logits, target), atol=1e-5) or \
                torch.allclose(got, F.cross_entropy(logits.t(), target), atol=1e-5):
            raise ExerciseError("only one direction: FLAIR averages texts → images (rows) and images → texts "
                                "(the transposed logits)")
        if torch.allclose(got, 2 * want, atol=1e-5):
            raise ExerciseError("the two directions are averaged, not summed")
        hard = (F.cross_entropy(logits, torch.arange(n)) + F.cross_entropy(logits.t(), torch.arange(n))) / 2
        if torch.allclose(got, hard, atol=1e-5):
            raise ExerciseError("use the soft target: pairs whose reports name the same findings are positives for "
                                "each other (cross_entropy accepts a probability matrix as target)")
        raise ExerciseError("(cross_entropy(logits, target) + cross_entropy(logits.T, target)) / 2")
    return passed("your loss is FLAIR's: CLIP's symmetric cross-entropy with soft targets")


@exercise("write the class prototype")
def check_prototype(fn) -> bool:
    """Chapter 5, exercise 2: ``fn(embeddings)`` → a class prototype from its descriptions' embeddings
    ``[n_descriptions, D]`` — their mean, **not** re-normalised, as FLAIR computes it."""
    g = torch.Generator().manual_seed(5)
    for n in (1, 3, 4):
        e = torch.nn.functional.normalize(torch.randn(n, 8, generator=g), dim=1)
        got = _call(fn, e.clone(), called=f"fn(embeddings) with embeddings a ({n}, 8) tensor: one row per description")
        want = e.mean(0)
        got = _tensor(got, (8,), "return one vector of the embedding's size, (8,) here (average over the "
                      "descriptions, dim 0)")
        if torch.allclose(got, want, atol=1e-6):
            continue
        if torch.allclose(got, want / want.norm(), atol=1e-6):
            raise ExerciseError("that is the textbook prototype; FLAIR keeps the mean as it is, without "
                                "re-normalising it — the quirk this exercise is about")
        if torch.allclose(got, e.sum(0), atol=1e-6):
            raise ExerciseError("the mean, not the sum, of the descriptions' embeddings")
        raise ExerciseError("the mean over the descriptions (dim 0) of their embeddings")
    return passed("right: FLAIR's prototype is the plain mean — shorter than 1 when its descriptions disagree, "
                  "which lowers that class's logits; the table below measures what it changes")


@exercise("write knowledge prompts for AMD")
def check_knowledge_prompts(descriptions, score, baseline: float, reference: float, margin: float = 0.05) -> bool:
    """Chapter 5, exercise 3: ``descriptions`` (a list of phrases for the AMD class) reach a zero-shot balanced
    accuracy ``score(descriptions)`` at least ``margin`` above the class-name prompt's ``baseline``. When the
    book's own descriptions (``reference``) do not either — a model trained for seconds, as in ``smoke`` — the
    answer cannot be judged, and the check says so and returns False."""
    descriptions = [] if isinstance(descriptions, str) or not hasattr(descriptions, "__iter__") else list(descriptions)
    if not descriptions or not all(isinstance(d, str) and d.strip() for d in descriptions):
        raise ExerciseError("give a list of phrases (at least one non-empty string), e.g. ['...', '...']")
    if all("macular degeneration" in d.lower() for d in descriptions):
        raise ExerciseError("describe what a grader sees, not the diagnosis' name: the name never appeared in the "
                            "training reports, so the model cannot know it")
    if float(reference) < baseline + margin:
        print(f"⚠️ this model cannot tell descriptions from names yet (the book's own descriptions: {reference:.3f}, "
              f"the class name: {baseline:.3f}); run the chapter in the cpu profile to check your answer")
        return False
    s = _call(score, list(descriptions), called="score(descriptions) with your list of phrases", who="score")
    s = _scalar(s, "score(descriptions) returns one balanced accuracy")
    if not _finite(s):
        raise ExerciseError("the score was not a number")
    if s < baseline + margin:
        raise ExerciseError(f"balanced accuracy {s:.3f} with your descriptions, {baseline:.3f} with the class name: "
                            "use findings the reports do name (read a few reports above)")
    return passed(f"your descriptions reach {s:.3f} balanced accuracy on AMD, {s - baseline:+.3f} over the class "
                  "name — expert knowledge, written as findings the model has read about")

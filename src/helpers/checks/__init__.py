"""Checks for the chapters' exercises: each tells the student whether an answer is right.

A check prints a line starting with ✅ when the answer is right and raises
:class:`ExerciseError` with a hint when it is not; an exercise left as
``raise NotImplementedError`` is reported as not attempted yet. The chapter
that poses each exercise is named in the check's docstring. Instructors: see
the "For instructors" page.
"""
from .ch00 import check_dr_rule, check_hr_answers, check_site_shortcut  # noqa: F401
from .ch01 import check_colour_shortcut, check_learned_invariance, check_nt_xent, check_temperature_answer  # noqa: F401
from .ch02 import check_attention_reading, check_center_update, check_collapse_prediction, check_dino_loss  # noqa: F401
from .ch03 import check_layer_decay, check_random_masking, check_ratio_zero_loss  # noqa: F401
from .ch04 import check_guidance, check_latent_scale, check_q_sample  # noqa: F401
from .ch05 import check_flair_loss, check_knowledge_prompts, check_prototype  # noqa: F401
from .ch06 import check_distortion_prediction, check_fold, check_specificity  # noqa: F401
from .core import ExerciseError, exercise, passed, pending  # noqa: F401

"""One module per self-supervised method, each of the same shape (see ``simclr``):

its loss (a plain function a student can replace), its fastai ``Callback``,
and a ``*_learner(dls, encoder, **knobs)`` factory taking any encoder with
``num_features``. Shared pieces live below: ``views``, ``models``, ``runs``.
"""

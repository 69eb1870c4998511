"""Old name of :mod:`helpers.student_copies`, kept until tests/test_notebooks.py and tests/nbval import the new one.

Explained on the "For instructors" page. Delete this module once nothing imports ``helpers.exercises``.
"""
from .student_copies import BEGIN, END, strip_solutions, student_copy, write_student_copies  # noqa: F401

"""Issue 27, item 9: every chapter ends with a summary and a quiz, and every quiz has an instructors' answer key.

The quiz is the numbered list under a chapter's ``## Quiz`` heading (an item starts with ``N. `` at the start of a
line; indented lines continue it). The answer keys live in ``book/answer-keys.md``: one section
``## Chapter N — <title>`` per chapter, and in it one answer per question, each starting at the start of a line
with ``N. **<the question, in bold>**`` followed by the model answer (indented, so it stays in the list item).
"""
import json
import re
from pathlib import Path

import pytest
import yaml

import bookrunner as book

NOTEBOOKS = book.discover()
NAMES = [p.stem for p in NOTEBOOKS]
KEYS = book.BOOK / "answer-keys.md"
MIN_QUESTIONS = 5

HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*$")
ITEM = re.compile(r"^(\d+)\.\s+(.*)$")
ANSWER = re.compile(r"^(\d+)\.\s+\*\*(.+?)\*\*\s*$")
CHAPTER = re.compile(r"^##\s+Chapter\s+(\d+)\b")


def markdown_lines(path: Path) -> list[str]:
    """Every line of the notebook's markdown cells, in order (a blank line between cells)."""
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    lines = []
    for cell in cells:
        if cell["cell_type"] == "markdown":
            lines += "".join(cell["source"]).splitlines() + [""]
    return lines


def section(lines: list[str], title: str) -> list[str] | None:
    """The lines under the level-2 heading ``title``, up to the next heading of level 1 or 2 (None if absent)."""
    for i, line in enumerate(lines):
        m = HEADING.match(line)
        if m and len(m.group(1)) == 2 and m.group(2) == title:
            out = []
            for rest in lines[i + 1:]:
                h = HEADING.match(rest)
                if h and len(h.group(1)) <= 2:
                    break
                out.append(rest)
            return out
    return None


def numbered_items(lines: list[str]) -> list[tuple[int, str]]:
    """The numbered list items of ``lines``: (number, text with its continuation lines joined)."""
    items = []
    for line in lines:
        m = ITEM.match(line)
        if m:
            items.append([int(m.group(1)), m.group(2).strip()])
        elif items and line.startswith(" ") and line.strip():
            items[-1][1] += " " + line.strip()
        elif line.strip() and items:  # unindented text after the list ends it
            break
    return [(n, text) for n, text in items]


def quiz(path: Path) -> list[tuple[int, str]]:
    lines = section(markdown_lines(path), "Quiz")
    return numbered_items(lines) if lines is not None else []


def chapter_number(path: Path) -> int:
    return int(re.match(r"(\d+)", path.stem).group(1))


def answer_sections() -> dict[int, list[str]]:
    """Chapter number -> the lines of its ``## Chapter N — ...`` section in the answer keys."""
    sections, current = {}, None
    for line in KEYS.read_text(encoding="utf-8").splitlines():
        m = CHAPTER.match(line)
        if m:
            current = int(m.group(1))
            assert current not in sections, f"answer-keys.md: two sections for chapter {current}"
            sections[current] = []
        elif HEADING.match(line) and len(HEADING.match(line).group(1)) <= 2:
            current = None
        elif current is not None:
            sections[current].append(line)
    return sections


def answers(lines: list[str]) -> list[tuple[int, str]]:
    """The answers of one chapter's section: (number, the question repeated in bold)."""
    return [(int(m.group(1)), m.group(2)) for m in map(ANSWER.match, lines) if m]


def squash(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def model_answer_text() -> list[str]:
    """The sentences of the model answers (not the repeated questions), long enough to be distinctive."""
    body = []
    for lines in answer_sections().values():
        body += [line for line in lines if line.strip() and not ANSWER.match(line)]
    sentences = re.split(r"(?<=[.!?])\s+", squash(" ".join(body)))
    return [s for s in sentences if len(s) >= 60]


def test_the_quiz_parser_reads_a_numbered_list_with_continuations():
    lines = ["## Summary", "", "- a", "", "## Quiz", "", "1. Why is", "   the sky blue?", "2. What?", "",
             "## Exercises", "3. not a question"]
    assert numbered_items(section(lines, "Quiz")) == [(1, "Why is the sky blue?"), (2, "What?")]
    assert section(lines, "Further reading") is None
    assert answers(["1. **Why is the sky blue?**", "", "   Rayleigh.", "2. no bold"]) == [(1, "Why is the sky blue?")]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=NAMES)
def test_every_chapter_has_a_summary_and_a_quiz(path):
    lines = markdown_lines(path)
    for title in ("Summary", "Quiz"):
        assert section(lines, title) is not None, f"{path.name}: no '## {title}' heading in its markdown"
    questions = quiz(path)
    assert len(questions) >= MIN_QUESTIONS, \
        f"{path.name}: the quiz has {len(questions)} numbered questions, at least {MIN_QUESTIONS} expected"
    assert [n for n, _ in questions] == list(range(1, len(questions) + 1)), \
        f"{path.name}: the quiz's questions are not numbered 1, 2, 3, ..."


def test_the_quiz_answer_keys_page_is_in_the_table_of_contents():
    assert KEYS.exists(), "book/answer-keys.md is missing"
    toc = yaml.safe_load((book.BOOK / "_toc.yml").read_text())
    files = [c["file"] for part in toc["parts"] for c in part["chapters"]]
    assert "answer-keys" in files, "book/_toc.yml does not list answer-keys"
    assert "(answer-keys.md)" in (book.BOOK / "instructors.md").read_text(), \
        "book/instructors.md does not link to the quiz answer keys"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=NAMES)
def test_every_quiz_has_one_answer_per_question(path):
    n = chapter_number(path)
    sections = answer_sections()
    assert n in sections, f"book/answer-keys.md has no '## Chapter {n} — ...' section for {path.name}"
    questions, keyed = quiz(path), answers(sections[n])
    assert [k for k, _ in keyed] == list(range(1, len(keyed) + 1)), \
        f"answer-keys.md, chapter {n}: answers are not numbered 1, 2, 3, ... (each starts with 'N. **')"
    assert len(keyed) == len(questions), \
        f"answer-keys.md, chapter {n}: {len(keyed)} answers for the {len(questions)} questions of {path.name}'s quiz"
    for (k, asked), (_, repeated) in zip(questions, keyed):
        assert squash(repeated) == squash(asked), \
            f"answer-keys.md, chapter {n}, answer {k}: the bold question differs from the quiz's\n" \
            f"  quiz: {squash(asked)}\n  key:  {squash(repeated)}"


def test_the_answer_keys_cover_only_existing_chapters_in_quiz_order():
    numbers = list(answer_sections())
    assert numbers == sorted(chapter_number(p) for p in NOTEBOOKS), \
        f"answer-keys.md chapter sections {numbers} do not match the chapters {[chapter_number(p) for p in NOTEBOOKS]}"


def test_student_copies_do_not_contain_the_quiz_answer_keys():
    copies = sorted(book.STUDENT.glob("*.ipynb"))
    assert copies, "no student copies in notebooks/student"
    sentences = model_answer_text()
    assert len(sentences) > 20, "too few model-answer sentences found in answer-keys.md"
    for copy in copies:
        cells = json.loads(copy.read_text(encoding="utf-8"))["cells"]
        text = squash(" ".join("".join(c["source"]) for c in cells))
        assert "Quiz answer keys" not in text and "answer-keys" not in text, \
            f"{copy.name} embeds or links the instructors' answer keys"
        leaked = [s for s in sentences if s in text]
        assert not leaked, f"{copy.name} contains model answers from answer-keys.md, e.g. {leaked[0]!r}"

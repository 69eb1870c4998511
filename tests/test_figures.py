"""The book's figures are readable (issue 27): method diagrams with nothing overlapping, figures within the page."""
import matplotlib
import numpy as np
import pytest

from helpers import diagrams, figures

matplotlib.use("Agg")


def _box(artist, renderer):
    patch = artist.get_bbox_patch()
    return (patch or artist).get_window_extent(renderer)


def diagram_problems(fig) -> list:
    """Boxes or labels that overlap, arrows that run through a third box, text outside the figure, small text."""
    renderer = fig.canvas.get_renderer()
    fig.canvas.draw()
    boxes = {k: _box(a, renderer) for k, a in fig.boxes.items()}
    labels = [(a.get_text(), a.get_window_extent(renderer)) for a in fig.arrow_labels]
    ax = fig.axes[0]
    problems = []
    width, height = fig.bbox.width, fig.bbox.height
    for k, b in list(boxes.items()) + labels:
        if b.x0 < 0 or b.y0 < 0 or b.x1 > width or b.y1 > height:
            problems.append(f"{k!r} runs off the figure")
    keys = list(boxes)
    for i, a in enumerate(keys):
        for b in keys[i + 1:]:
            if boxes[a].overlaps(boxes[b]):
                problems.append(f"boxes {a!r} and {b!r} overlap")
    for text, lb in labels:
        for k, b in boxes.items():
            if lb.overlaps(b):
                problems.append(f"label {text!r} covers box {k!r}")
    for i, (t1, l1) in enumerate(labels):
        for t2, l2 in labels[i + 1:]:
            if l1.overlaps(l2):
                problems.append(f"labels {t1!r} and {t2!r} overlap")
    for ann in [c for c in ax.get_children() if isinstance(c, matplotlib.text.Annotation)]:
        src, dst = ann.anncoords, ann.xycoords
        path = ann.arrow_patch.get_path()
        pts = ann.arrow_patch.get_transform().transform(path.vertices) if path is not None else []
        ends = {k for k, a in fig.boxes.items() if a in (src, dst)}
        for k, b in boxes.items():
            if k not in ends and any(b.contains(x, y) for x, y in pts):
                problems.append(f"an arrow {sorted(ends)} runs through box {k!r}")
    for a in list(fig.boxes.values()) + fig.arrow_labels:
        if a.get_fontsize() < figures.MIN_FONT_PT:
            problems.append(f"{a.get_text()!r} is smaller than {figures.MIN_FONT_PT} pt")
    return problems


@pytest.mark.parametrize("name", sorted(diagrams.ALL))
def test_each_method_diagram_renders_with_nothing_overlapping(name):
    fig = figures.method_diagram(**diagrams.ALL[name])
    assert fig.get_size_inches()[0] <= figures.MAX_WIDTH_IN + 1e-6
    problems = diagram_problems(fig)
    assert not problems, "\n".join(problems)
    spec = diagrams.ALL[name]
    for k, (_, _, text) in spec["boxes"].items():  # every loss has inputs
        if any(w in text.lower() for w in ("loss", "mse", "cross-entropy", "nt-xent")):
            assert sum(a[1] == k for a in spec["arrows"]) >= 2, f"{name}: the loss {text!r} has fewer than 2 inputs"


def test_dino_diagram_shows_the_ema_teacher_and_the_stop_gradient():
    kinds = {a[2] for a in diagrams.DINO["arrows"]}
    assert {"ema", "stop"} <= kinds
    assert any(a[:3] == ("s", "t", "ema") for a in diagrams.DINO["arrows"])  # the teacher is the student's EMA


def test_the_diagram_check_sees_an_overlap_and_an_arrow_through_a_box():
    bad = figures.method_diagram({"a": (0, 0, "first box"), "b": (0.1, 0, "on top of it"), "c": (2, 0, "far"),
                                  "d": (1, 0, "in the way")}, [("a", "c", "grad")])
    problems = diagram_problems(bad)
    assert any("overlap" in p for p in problems) and any("runs through box 'd'" in p for p in problems)


def test_panels_wrap_within_the_page_width():
    fig, axes = figures.panels(5, 3.3, 3)
    assert len(axes) == 5 and fig.get_size_inches()[0] <= figures.MAX_WIDTH_IN
    assert sum(ax.get_visible() for ax in fig.axes) == 5  # the sixth cell of the 2 x 3 grid is hidden
    fig = figures.show_images({"row": np.zeros((12, 8, 8, 3))}, titles=list(range(12)))
    assert fig.get_size_inches()[0] <= figures.MAX_WIDTH_IN + 1e-6


def test_image_grid_row_labels_stay_in_their_rows():
    """Chapter 4's guidance grid: 16 columns make rows short, and a rotated row label as long as "glaucoma + amd"
    ran into its neighbours' (issue 27's browser review). Each label must sit within its own row and the figure."""
    names = ["neither", "amd", "glaucoma", "glaucoma + amd"]
    fig = figures.show_images({n: np.zeros((16, 8, 8, 3)) for n in names}, titles=["real"] + [""] * 15, size=1.1)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    axes = np.array(fig.axes).reshape(len(names), 16)
    for r, name in enumerate(names):
        label = axes[r, 0].yaxis.label.get_window_extent(renderer)
        row = axes[r, 0].get_window_extent(renderer)
        assert axes[r, 0].get_ylabel() == name
        assert row.y0 - 1 <= label.y0 and label.y1 <= row.y1 + 1, f"{name!r} spills out of its row"
        assert label.x0 >= 0, f"{name!r} runs off the figure"

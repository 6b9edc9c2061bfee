"""What every figure module shares: colours of trained and initial states, a row of axes on a new figure."""
from matplotlib.figure import Figure

TRAINED_COLOR = "C0"
INIT_COLOR = "0.55"


def new_axes(n, width=3.2, height=2.8):
    """A new :class:`~matplotlib.figure.Figure` (constrained layout, no pyplot) with one row of ``n`` axes.

    Returns
    -------
    (Figure, ndarray of Axes)
    """
    fig = Figure(figsize=(width * n, height), layout="constrained")
    return fig, fig.subplots(1, n, squeeze=False)[0]

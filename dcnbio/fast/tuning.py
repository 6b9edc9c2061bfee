"""Measured choices between exact formulations (the CPU counterpart of ``torch.backends.cudnn.benchmark``).

Several operations of a DCN can be computed in more than one exact way, and which way is fastest depends on
the machine and on what runs around the operation, not only on the shapes: PyTorch's CELU kernel was faster
than the ``exp`` formulation on one AVX-512 CPU and several times slower on another; NNPACK's convolution won
back to back and lost inside a training step, where its thread pool competes with OpenMP's spinning workers;
the separable SRF formulation won on small maps with AVX2 and lost with AVX-512, which is why the SRF rule has
one variant per vector width (figures in ``benchmarks/RESULTS.md``).  Rules fixed in the code cannot follow all
of that.

With tuning **enabled**, each such choice is made by timing the candidates on the call's own shapes the first
time the shapes occur in the process, where the call happens (inside a training step the measurement includes
the interference of the operations around it; a few milliseconds to a few hundred, once), and the winner serves
every later call with the same key (CPU only: on CUDA the fixed rules apply):

* :class:`~dcnbio.core.layers.srf.SRFConv2d` with ``formulation="auto"``: dense, spectral or separable
  (:mod:`dcnbio.fast.formulations`);
* :func:`~dcnbio.fast.conv.conv2d` (stride 1, CPU): oneDNN, oneDNN on images folded into channels, NNPACK or
  PyTorch's im2col + GEMM convolution, for the forward convolution and for the input gradient computed as a
  forward convolution (each timed right after a small OpenMP-parallel operation, as in a step);
* the CELU formulation ``"auto"`` (:mod:`dcnbio.fast.celu`, CPU): PyTorch's kernel or the ``exp`` formulation.

With tuning **disabled** (the default) every choice follows the fixed rules of those modules, so that a run is
bit-for-bit repeatable on one machine.  All candidates compute the same function; they differ in floating-point
rounding only (tested against each other and against the reference formulation), so tuning changes results at
the level of float rounding, and two processes may choose differently where candidates are within a few percent
of each other.  Turn it on with :func:`set_enabled`, the :func:`tuning` context manager or ``dcnbio train
--tune`` (no environment variable is read); :func:`choices` reports what was chosen and the measured times.
"""
import contextlib
import time

from ..errors import ConfigError

#: A candidate other than the first (the fixed rule's) is taken only if it is at least this much faster.
MARGIN = 0.9
#: Untimed calls per candidate before timing (the first calls of a shape allocate, and fresh pages fault).
WARMUP = 2
#: Timed rounds per candidate, alternating; the median round of each decides (its typical cost where it runs).
ROUNDS = 5


_enabled = False
_choices = {}


def enabled():
    """Whether choices are measured (``True``) or follow the fixed rules (``False``, the default)."""
    return _enabled


def set_enabled(flag):
    """Turn measured choices on or off for this process; returns the previous setting, to be given back to
    :func:`set_enabled` to restore it."""
    global _enabled
    previous, _enabled = _enabled, bool(flag)
    return previous


@contextlib.contextmanager
def tuning(flag=True):
    """``with tuning(): ...`` measures choices inside the block (``tuning(False)`` forces the fixed rules)."""
    previous = set_enabled(flag)
    try:
        yield
    finally:
        set_enabled(previous)


def choose(key, candidates, *, rounds=ROUNDS, margin=MARGIN, clock=time.perf_counter):
    """The name of the fastest candidate for ``key``, measured on first use and remembered.

    Parameters
    ----------
    key : hashable
        What the choice depends on (operation, shapes, dtype, device, whether gradients are taken).
    candidates : dict of name -> callable, or a zero-argument callable returning that dict
        Zero-argument callables doing the work once each.  The first is the default (the fixed rule's
        choice): another wins only if its median time is at most ``margin`` times the default's.  Given as a
        callable, the dict (and whatever its candidates need) is built only when ``key`` is measured, not on
        the calls that find it decided.
    rounds : int
        Timed calls per candidate, taken alternately after :data:`WARMUP` untimed calls of each.

    Returns
    -------
    str

    Notes
    -----
    The median, not the fastest round: a candidate whose cost varies from call to call where it runs should be
    judged by its typical call: NNPACK's block-1 convolution next to OpenMP's workers was faster than oneDNN in
    its best round and slower in its median, and chosen by its best round it made the training step slower
    (``benchmarks/RESULTS.md``).  Disturbances from outside
    hit the alternating rounds of every candidate alike, and the median ignores up to two disturbed rounds of
    five.
    """
    hit = _choices.get(key)
    if hit is not None:
        return hit[0]
    if callable(candidates):
        candidates = candidates()
    if not candidates:
        raise ConfigError(f"nothing to choose from for {key!r}")
    names = list(candidates)
    if len(names) == 1:
        _choices[key] = (names[0], {})
        return names[0]
    for _ in range(WARMUP):
        for fn in candidates.values():
            fn()
    times = {n: [] for n in names}
    for _ in range(rounds):
        for n in names:
            t0 = clock()
            candidates[n]()
            times[n].append(clock() - t0)
    typical = {n: sorted(ts)[(len(ts) - 1) // 2] for n, ts in times.items()}
    best = names[0]
    for n in names[1:]:
        if typical[n] <= margin * typical[names[0]] and typical[n] < typical[best]:
            best = n
    _choices[key] = (best, typical)
    return best


def choices():
    """What was chosen so far: ``{key: (name, {candidate: median timed round in seconds})}`` (a copy)."""
    return {k: (v[0], dict(v[1])) for k, v in _choices.items()}


def clear():
    """Forget every choice (the next call of each kind measures again)."""
    _choices.clear()

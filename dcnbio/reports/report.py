"""Reports of computed tables as Markdown and LaTeX (booktabs), written side by side.

A :class:`Report` is an ordered list of sections, each holding paragraphs, tables (pandas DataFrames, formatted
here without extra dependencies) and raw LaTeX (e.g. a statsmodels ``summary().as_latex()``, shown in the
Markdown as a preformatted text block).  Numbers are printed with 4 significant digits; NaN as blank.

>>> import pandas as pd
>>> r = Report("Example")
>>> r.section("Numbers").table(pd.DataFrame({"x": [1.23456, float("nan")]}, index=["a", "b"]))  # doctest: +ELLIPSIS
<...Report object at ...>
>>> print(r.to_markdown().splitlines()[4])
|   | x |
"""
import math
import os
import re

import numpy as np
import pandas as pd


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
_UNICODE_TEX = {"σ": r"$\sigma$", "α": r"$\alpha$", "≈": r"$\approx$", "×": r"$\times$", "−": "-", "–": "--",
                "≥": r"$\geq$", "≤": r"$\leq$", "√": r"$\surd$", "π": r"$\pi$", "²": r"$^2$", "…": r"\ldots{}",
                "→": r"$\to$", "ℓ": r"$\ell$", "μ": r"$\mu$"}


def latex_escape(text):
    """Escape LaTeX special characters and map common Unicode symbols to math mode."""
    out = "".join(_LATEX_SPECIAL.get(ch, ch) for ch in str(text))
    return "".join(_UNICODE_TEX.get(ch, ch) for ch in out)


def format_value(value, digits=4):
    """Numbers with ``digits`` significant digits (integers as such), NaN/None as blank, others as text."""
    if value is None:
        return ""
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        if math.isnan(value):
            return ""
        if value != 0 and float(value).is_integer() and abs(value) < 1e6:
            return str(int(value))
        return f"{value:.{digits}g}"
    return str(value)


def _cells(df, digits):
    header = [str(df.index.name or "")] + [str(c) for c in df.columns]
    rows = [[str(idx)] + [format_value(v, digits) for v in row]
            for idx, row in zip(df.index, df.itertuples(index=False))]
    return header, rows


def markdown_table(df, digits=4):
    """A GitHub-flavoured Markdown table of ``df`` (the index as first column)."""
    header, rows = _cells(df, digits)
    esc = lambda s: s.replace("|", r"\|").replace("\n", " ")  # noqa: E731
    lines = ["| " + " | ".join(esc(h) for h in header) + " |",
             "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def latex_table(df, caption="", digits=4, label=None, placement="H"):
    """A booktabs ``table`` of ``df`` (needs ``\\usepackage{booktabs}``, and ``float`` for placement ``H``).

    ``H`` keeps each table where it is written: a report has more tables than LaTeX's float queue holds.
    """
    header, rows = _cells(df, digits)
    numeric = [pd.api.types.is_numeric_dtype(df[c]) for c in df.columns]
    spec = "l" + "".join("r" if n else "l" for n in numeric)
    lines = [r"\begin{table}[" + placement + "]", r"\centering", r"\small"]
    if caption:
        lines.append(r"\caption{" + latex_escape(caption) + "}")
    if label:
        lines.append(r"\label{" + label + "}")
    lines += [r"\begin{tabular}{" + spec + "}", r"\toprule",
              " & ".join(latex_escape(h) for h in header) + r" \\", r"\midrule"]
    lines += [" & ".join(latex_escape(c) for c in row) + r" \\" for row in rows]
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines)


def _markdown_inline_to_latex(text):
    """Paragraph text: escape, then turn Markdown ``code`` and **bold** into LaTeX."""
    parts = re.split(r"(`[^`]*`)", str(text))
    out = []
    for part in parts:
        if part.startswith("`") and part.endswith("`") and len(part) >= 2:
            out.append(r"\texttt{" + latex_escape(part[1:-1]) + "}")
        else:
            esc = latex_escape(part)
            out.append(re.sub(r"\*\*(.+?)\*\*", r"\\textbf{\1}", esc))
    return "".join(out)


class Report:
    """An ordered document of sections with paragraphs, tables, figures and raw LaTeX.

    Methods return the report, so calls chain: ``report.section("Fit").text("…").table(df, "caption")``.
    """

    def __init__(self, title):
        self.title = title
        self._items = []  # (kind, payload)

    def section(self, title):
        """Start a section titled ``title``; returns the report."""
        self._items.append(("section", title))
        return self

    def text(self, paragraph):
        """A paragraph; Markdown ``code`` and **bold** are carried into the LaTeX."""
        self._items.append(("text", paragraph))
        return self

    def bullets(self, items):
        """A bulleted list of ``items``; returns the report."""
        self._items.append(("bullets", [str(i) for i in items]))
        return self

    def table(self, df, caption="", digits=4):
        """A table of ``df`` (a DataFrame or what makes one) with ``caption``, numbers to ``digits`` significant
        digits; returns the report."""
        if not isinstance(df, pd.DataFrame):
            df = pd.DataFrame(df)
        self._items.append(("table", (df, caption, digits)))
        return self

    def figure(self, path, caption=""):
        """A figure file (relative to the report's directory)."""
        self._items.append(("figure", (os.fspath(path), caption)))
        return self

    def latex(self, tex, text_version=None):
        """Raw LaTeX for the .tex (e.g. a statsmodels summary); ``text_version`` goes to the Markdown."""
        self._items.append(("latex", (tex, text_version)))
        return self

    def to_markdown(self):
        """The report as Markdown text."""
        out = [f"# {self.title}", ""]
        for kind, payload in self._items:
            if kind == "section":
                out += [f"## {payload}", ""]
            elif kind == "text":
                out += [payload, ""]
            elif kind == "bullets":
                out += [f"- {item}" for item in payload] + [""]
            elif kind == "table":
                df, caption, digits = payload
                if caption:
                    out += [f"*{caption}*", ""]
                out += [markdown_table(df, digits), ""]
            elif kind == "figure":
                path, caption = payload
                out += [f"![{caption}]({path})", ""]
            elif kind == "latex":
                tex, text_version = payload
                if text_version:
                    out += ["```", text_version.rstrip(), "```", ""]
        return "\n".join(out).rstrip() + "\n"

    def to_latex(self):
        """The report as a standalone LaTeX document."""
        out = [r"\documentclass[10pt]{article}", r"\usepackage[margin=2cm]{geometry}", r"\usepackage{booktabs}",
               r"\usepackage{graphicx}", r"\usepackage[T1]{fontenc}", r"\usepackage{float}",
               r"\begin{document}", r"\section*{" + latex_escape(self.title) + "}", ""]
        for kind, payload in self._items:
            if kind == "section":
                out += [r"\subsection*{" + latex_escape(payload) + "}", ""]
            elif kind == "text":
                out += [_markdown_inline_to_latex(payload), ""]
            elif kind == "bullets":
                out += [r"\begin{itemize}"] + [r"\item " + _markdown_inline_to_latex(i) for i in payload] + \
                    [r"\end{itemize}", ""]
            elif kind == "table":
                df, caption, digits = payload
                out += [latex_table(df, caption, digits), ""]
            elif kind == "figure":
                path, caption = payload
                out += [r"\begin{figure}[H]", r"\centering",
                        r"\includegraphics[width=\linewidth]{" + path + "}",
                        r"\caption{" + latex_escape(caption) + "}", r"\end{figure}", ""]
            elif kind == "latex":
                out += [payload[0], ""]
        out.append(r"\end{document}")
        return "\n".join(out) + "\n"


def physiology_report(tables, runs, grid, models, *, n_times, missing=()):
    """The report of ``analyses/physiology.py`` from :func:`dcnbio.stats.tuning_study.summarize`'s tables.

    Parameters
    ----------
    tables : dict of str → pandas.DataFrame
    runs : list of (label, state, model, info)
    grid : dict
        The stimulus grid (:func:`~dcnbio.core.stimuli.stimulus_grid`).
    models : list of str
        Model names with figures ``properties-<model>.png`` and ``tuning-<model>.png``.
    n_times : int
    missing : sequence of str
        Default checkpoints not found or not finished.
    """
    r = Report("In-silico electrophysiology: grating tuning of DCN units against macaque V1")
    r.section("Inputs")
    r.table(pd.DataFrame([{"run": label, "state": state, "checkpoint": info.get("path", ""),
                           "epoch": info.get("epoch", ""), "blocks": ", ".join(model.blocks())}
                          for label, state, model, info in runs]).set_index("run"), "Checkpoints")
    if missing:
        r.text("Default checkpoints not found or not finished (skipped): " + ", ".join(f"`{m}`" for m in missing))
    r.text(f"Stimuli: full-field sinusoidal gratings around the training data's mean luminance, normalised like "
           f"the training images; {grid['sf'].size} spatial frequencies log-spaced over "
           f"{grid['sf'][0]:.3g}–{grid['sf'][-1]:.3g} cycles/pixel, {grid['orientation'].size} orientations, "
           f"{grid['phase'].size} phases, Michelson contrasts {', '.join(f'{c:g}' for c in grid['contrast'])}. "
           f"A unit is one channel of one block read at the centre of its map, at {n_times} ODE times in "
           f"[0, T] (ResNet blocks: input and output). Evoked response: [h − h(blank)]₊; tuning at the best "
           f"phase; preferred (SF, orientation) at full contrast and the last time (dcnbio.stats.physiology).")
    r.section("Units").table(tables["units"].set_index("model"), "Units recorded per network")
    props = tables["properties"].set_index("model")
    r.section("Tuning properties").table(props, "Medians over units (mean over seeds); control: paired t-test "
                                                "over seeds of trained vs init medians; V1: one-sample t-test "
                                                "of the seeds' medians against the V1 median")
    r.text("Against V1: two digitised V1 histograms in data/reference/ are on a property's own scale: the SF "
           "selectivity of Schiller, Finlay & Volman (1976; 100·f_low/f_high at 0.707 of the peak) and the "
           "circular variance of Ringach, Shapley & Hawken (2002), the latter a secondary digitisation (a course "
           "project's counts, n = 301 of the paper's 308 cells, not checked against the paper: see "
           "data/reference/README.md). No digitised distribution of orientation bandwidth, SF bandwidth in "
           "octaves, F1/F0 or c50 was available offline (the per-cell Ringach et al. 2002 database could not be "
           "fetched), so those properties are reported with their init control, not compared. "
           "Units of one network are not independent: every test treats seeds as clusters; with 3 seeds a test "
           "has little power, and its p value says so.")
    if len(tables["population"]):
        r.table(tables["population"].set_index("model"),
                "Population statistics per seed against V1 (De Valois, Yund & Hepler 1982 preferred orientation; "
                "De Valois, Albrecht & Thorell 1982 peak SF spread)")
    for m in models:
        r.figure(f"properties-{m}.png", f"{m}: property distributions, trained (filled), init (grey), V1 (black) "
                                        f"where on the same scale")
        r.figure(f"tuning-{m}.png", f"{m}: the most responsive unit of each block (first seed): SF, orientation, "
                                    f"contrast (Naka–Rushton fit), time course per contrast")
    r.section("Response time course and contrast")
    if len(tables["latency"]):
        r.table(tables["latency"].set_index("model"),
                "Slope of the half-rise time against log2 contrast (V1: latency grows as contrast falls, a "
                "negative slope); t-test of the seeds' mean slopes against 0")
    else:
        r.text("No model with ODE blocks: no latencies.")
    r.figure("latency.png", "Median half-rise time against contrast, per seed")
    return r

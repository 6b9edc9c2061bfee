"""The rules of the house, checked by tools rather than by memory.

* ``.importlinter``: the layer contracts (core < fast < train | extract | stats < plots < reports < script; the
  core imports nothing above it, the speed machinery ``dcnbio.fast`` included; the layers do not import the
  networks; extraction, statistics, plots and reports never import the disk edge, checkpoints, training or the
  script helpers; statistics import no core and no torch; the disk edge ``dcnbio.io`` depends on no model,
  checkpoint, training or analysis code; nothing below ``dcnbio.plots`` imports matplotlib or seaborn), run with
  import-linter's ``lint-imports``.
* The shell scripts (``data/checkpoints/*.sh``, ``.ci/run``): ShellCheck finds nothing (quoting, word splitting,
  unchecked ``cd``, … — the lanes that train the bundle run unattended for hours).
* Here, from the syntax tree of every module: no module imports another module's private name (``_x``) or a
  private module (``torchdiffeq._impl``, ``dcnbio.x._y``), and nothing in ``dcnbio/`` imports ``analyses`` or
  ``benchmarks`` (they are scripts built on the library, never the reverse).
* Here, from the syntax tree: the core and the speed machinery read no environment variable (``os.environ``,
  ``os.getenv``): what a model computes is decided by its configuration and explicit calls, never by the shell.
* Here, from the tokens of every module: no comment or docstring in ``dcnbio/`` holds a date, a CPU model or a
  timing (measurements belong in ``benchmarks/RESULTS.md``); no script in ``analyses/`` is over 120 lines.
* Here, from the text: no line of a tracked Python or shell source is over 120 characters.
"""
import ast
import re
import subprocess
import sys
import tokenize
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "dcnbio"


def private(name):
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def imports(path):
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, None
        elif isinstance(node, ast.ImportFrom):
            for alias in node.names:
                yield node.lineno, "." * node.level + (node.module or ""), alias.name


def test_import_contracts_hold():
    lint = Path(sys.executable).with_name("lint-imports")
    done = subprocess.run([str(lint), "--config", str(ROOT / ".importlinter")], cwd=ROOT, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout


def test_shell_scripts_pass_shellcheck():
    scripts = sorted(ROOT.glob("data/checkpoints/*.sh")) + [ROOT / ".ci" / "run"]
    assert len(scripts) >= 3 and all(p.is_file() for p in scripts)
    check = Path(sys.executable).with_name("shellcheck")
    done = subprocess.run([str(check), "--shell", "bash", *map(str, scripts)], cwd=ROOT, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]


def test_python_sources_have_no_unused_or_undefined_names():
    """pyflakes over the package, the scripts, the benchmarks and the tests: undefined names, unused imports and
    bindings, shadowed imports.  Re-exports are named in ``__all__`` or marked ``# noqa: F401`` (pyflakes reads
    neither mark: those lines are left out here, and only those)."""
    sources = [ROOT / d for d in ("dcnbio", "analyses", "benchmarks", "tests")]
    done = subprocess.run([sys.executable, "-m", "pyflakes", *map(str, sources)], cwd=ROOT, capture_output=True,
                          text=True)
    assert done.returncode in (0, 1) and not done.stderr, done.stderr[-2000:]
    noqa = []
    for line in done.stdout.splitlines():
        path, lineno = line.split(":")[:2]
        if "imported but unused" in line and "# noqa: F401" in Path(path).read_text().splitlines()[int(lineno) - 1]:
            noqa.append(line)
    offences = [line for line in done.stdout.splitlines() if line not in noqa]
    assert not offences, "\n".join(offences)


def test_no_private_names_or_modules_cross_module_boundaries_and_no_script_is_imported():
    offences = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for line, module, name in imports(path):
            where = f"{path.relative_to(ROOT)}:{line}"
            parts = [p for p in module.lstrip(".").split(".") if p]
            if any(private(p) for p in parts):
                offences.append(f"{where} imports the private module {module}")
            if name is not None and private(name):
                offences.append(f"{where} imports the private name {name} from {module}")
            if parts and parts[0] in ("analyses", "benchmarks"):
                offences.append(f"{where} imports the script package {module}")
    assert offences == []


def test_the_checks_catch_what_they_forbid(tmp_path):
    # the syntax-tree check itself: a private name and a private module are found
    sample = tmp_path / "m.py"
    sample.write_text("from torchdiffeq._impl.odeint import SOLVERS\nfrom .sigmas import _mask\n")
    found = [(module, name) for _, module, name in imports(sample)
             if any(private(p) for p in module.lstrip(".").split(".") if p) or (name and private(name))]
    assert found == [("torchdiffeq._impl.odeint", "SOLVERS"), (".sigmas", "_mask")]


def environment_reads(path):
    """``(line, name)`` of every ``environ`` attribute or ``getenv`` call in ``path``."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv", "environb"):
            yield node.lineno, node.attr
        elif isinstance(node, ast.Name) and node.id in ("environ", "getenv"):
            yield node.lineno, node.id


def test_core_and_speed_machinery_read_no_environment_variable():
    paths = sorted((PACKAGE / "core").rglob("*.py")) + sorted((PACKAGE / "fast").rglob("*.py"))
    assert len(paths) > 15
    offences = [f"{p.relative_to(ROOT)}:{line} reads {name}" for p in paths for line, name in environment_reads(p)]
    assert offences == []


def test_the_environment_check_finds_reads(tmp_path):
    sample = tmp_path / "m.py"
    sample.write_text("import os\nfrom os import getenv\na = os.environ.get('X')\nb = getenv('Y')\n"
                      "c = os.getenv('Z')\nd = 'environ'\n")
    assert sorted(environment_reads(sample)) == [(3, "environ"), (4, "getenv"), (5, "getenv")]


#: Methods that override a documented one (torch's Module, argparse's parser, the core's tables' base classes).
OVERRIDES = {"forward", "extra_repr", "error", "log2_sigma", "prepare", "convolve", "choose"}


def undocumented(path):
    """``(line, name)`` of public module-level functions and classes, and public methods of public classes (other
    than :data:`OVERRIDES`; dunder methods are Python's protocol), that have no docstring."""
    tree = ast.parse(path.read_text(), str(path))
    for node in tree.body:
        if not isinstance(node, (ast.FunctionDef, ast.ClassDef)) or node.name.startswith("_"):
            continue
        if not ast.get_docstring(node):
            yield node.lineno, node.name
        if isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and not item.name.startswith("_") and item.name not in OVERRIDES \
                        and not ast.get_docstring(item):
                    yield item.lineno, f"{node.name}.{item.name}"


def test_the_public_surface_is_documented():
    """Every public function, class and method of the library says what it does (NumPy style where it takes
    data: shapes, dims, units)."""
    offences = [f"{p.relative_to(ROOT)}:{line} {name}" for p in sorted(PACKAGE.rglob("*.py"))
                for line, name in undocumented(p)]
    assert offences == []


def test_the_docstring_check_finds_them(tmp_path):
    sample = tmp_path / "m.py"
    sample.write_text('def f():\n    return 1\n\n\ndef _g():\n    pass\n\n\nclass A:\n    """A."""\n\n'
                      '    def forward(self):\n        pass\n\n    def size(self):\n        return 2\n')
    assert list(undocumented(sample)) == [(1, "f"), (15, "A.size")]


#: Calls that touch the disk; extraction, statistics, plots and reports take models, tensors and xarray and make
#: none of them.
DISK_CALLS = {"open", "read_csv", "read_table", "to_csv", "to_netcdf", "open_dataset", "open_mfdataset", "savefig",
              "listdir", "scandir", "makedirs", "mkdir", "isfile", "isdir", "exists", "glob", "rglob", "unlink",
              "rmtree", "read_text", "write_text", "read_bytes", "write_bytes"}


def disk_calls(path):
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else None
        torch_io = isinstance(f, ast.Attribute) and f.attr in ("save", "load") and \
            isinstance(f.value, ast.Name) and f.value.id == "torch"
        if name in DISK_CALLS or torch_io:
            yield node.lineno, name


#: The layers below the scripts, which take models, tensors and xarray and never paths; the ``dcnbio extract``
#: command (``extract/cli.py``, ``extract/__main__.py``) is the one module among them that writes.
NO_DISK = ("extract", "stats", "reports", "plots")
COMMANDS = ("extract/cli.py", "extract/__main__.py")


def test_extraction_statistics_plots_and_reports_make_no_disk_call():
    paths = [p for part in NO_DISK for p in sorted((PACKAGE / part).rglob("*.py") if (PACKAGE / part).is_dir()
                                                     else [PACKAGE / part])]
    assert len(paths) > 20 and all(p.exists() for p in paths)
    offences = [f"{path.relative_to(ROOT)}:{line} calls {name}"
                for path in paths if str(path.relative_to(PACKAGE)) not in COMMANDS
                for line, name in disk_calls(path)]
    assert offences == []


def test_the_disk_call_check_finds_disk_calls(tmp_path):
    sample = tmp_path / "m.py"
    sample.write_text("import torch, pandas as pd\nx = pd.read_csv('a.csv')\ntorch.save(x, 'b.pt')\n"
                      "fig.savefig('c.png')\ny = 'a'.replace('a', 'b')\n")
    assert [name for _, name in disk_calls(sample)] == ["read_csv", "save", "savefig"]


#: What a lab notebook writes and a library's documentation does not: dates, CPU models, timings.
MEASUREMENT = re.compile(r"\b20\d\d-\d\d-\d\d\b|\bEPYC\b|\bXeon\b|\bZen ?\d\b|\bfamily \d+ model \d+|"
                         r"\d(\.\d+)?( ?[–-] ?\d+(\.\d+)?)? ?ms\b")


def measurements(path):
    """``(line, match)`` of every comment or string literal (docstrings included) of ``path`` that holds one."""
    with open(path, "rb") as f:
        return [(tok.start[0], m.group()) for tok in tokenize.tokenize(f.readline)
                if tok.type in (tokenize.COMMENT, tokenize.STRING) and (m := MEASUREMENT.search(tok.string))]


def test_docstrings_and_comments_hold_no_dates_machines_or_timings():
    """Measurements go to ``benchmarks/RESULTS.md``; the code says what and why (issue 23)."""
    hits = [f"{p.relative_to(ROOT)}:{line}: {m}" for p in sorted(PACKAGE.rglob("*.py")) for line, m in measurements(p)]
    assert not hits, "measurements in dcnbio/ (move them to benchmarks/RESULTS.md):\n" + "\n".join(hits)


def test_the_measurement_check_finds_them(tmp_path):
    bad = tmp_path / "m.py"
    bad.write_text('"""Fast: 3.1–3.4 ms on a fast machine."""\nx = 1  # on an AMD EPYC\ny = "AVX512"  # 2 s\n'
                   'z = 2  # measured 2026-12-03\n')
    assert measurements(bad) == [(1, "3.1–3.4 ms"), (2, "EPYC"), (4, "2026-12-03")]


#: Scripts are thin glue (argparse → load → compute → plot → save): at most this many lines.
SCRIPT_LINES = 120


def test_scripts_are_thin():
    lengths = {p.name: len(p.read_text().splitlines()) for p in sorted((ROOT / "analyses").glob("*.py"))}
    too_long = {n: k for n, k in lengths.items() if k > SCRIPT_LINES}
    assert not too_long, f"scripts over {SCRIPT_LINES} lines: {too_long}"


#: The longest line of a Python or shell source, in characters (not bytes: σ is one).
LINE_CHARACTERS = 120


def long_lines(paths):
    """``path:line: N characters`` of every line of ``paths`` longer than :data:`LINE_CHARACTERS`."""
    return [f"{p.relative_to(ROOT) if p.is_relative_to(ROOT) else p}:{k}: {len(line)} characters"
            for p in paths for k, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
            if len(line) > LINE_CHARACTERS]


def test_no_source_line_is_over_the_limit():
    tracked = subprocess.run(["git", "ls-files", "*.py", "*.sh", ".ci/run"], cwd=ROOT, capture_output=True,
                             text=True, check=True).stdout.split()
    assert len(tracked) > 50  # a clone with its sources, not an empty listing
    offences = long_lines([ROOT / name for name in tracked])
    assert not offences, "lines over the limit:\n" + "\n".join(offences)


def test_the_line_check_counts_characters(tmp_path):
    src = tmp_path / "l.py"
    src.write_text("σ" * LINE_CHARACTERS + "\n" + "x" * (LINE_CHARACTERS + 1) + "\n", encoding="utf-8")
    assert long_lines([src]) == [f"{src}:2: {LINE_CHARACTERS + 1} characters"]


def test_scripts_share_one_skeleton():
    """Every script builds its parser with ``dcnbio.script.analysis_parser`` (shared --checkpoint, --out,
    --overwrite, one-line usage errors), never its own ArgumentParser, and none imports another script."""
    for path in sorted((ROOT / "analyses").glob("*.py")):
        tree = ast.parse(path.read_text())
        calls = {node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", None)
                 for node in ast.walk(tree) if isinstance(node, ast.Call)}
        assert "analysis_parser" in calls, f"{path.name} does not build its parser with analysis_parser"
        assert not calls & {"ArgumentParser", "ScriptParser"}, f"{path.name} builds its own parser"
        options = [node.args[0].value for node in ast.walk(tree) if isinstance(node, ast.Call)
                   and getattr(node.func, "attr", None) == "add_argument" and node.args
                   and isinstance(node.args[0], ast.Constant)]
        assert not {"--checkpoint", "--out", "--overwrite", "--bundle", "--compute"} & set(options), \
            f"{path.name} repeats a shared option"
        imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        assert not imported & {p.stem for p in (ROOT / "analyses").glob("*.py")}, f"{path.name} imports a script"

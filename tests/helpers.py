"""What several test modules share and is not a fixture: loading the analysis scripts, which are files, not a
package (``analyses/`` has no ``__init__``; the package never imports them)."""
import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def load_analysis(name):
    """``analyses/<name>.py`` executed as a fresh module named ``name``.

    Every call runs the script's top level anew and registers nothing in ``sys.modules``, so a test that patches
    one copy never changes another test's.
    """
    spec = importlib.util.spec_from_file_location(name, REPO / "analyses" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module

"""hourglass: a Kubernetes-native job scheduler.

The core package holds what every component shares: domain types (`domain`), schedule
arithmetic (`schedules`), the PostgreSQL store (`store`), etcd leases and fencing (`locks`),
the embedded servers of `hourglass dev` (`embedded`) and the CLI (`cli`). The components
`hourglass.api`, `hourglass.workers` and `hourglass.operator` are built on it; it never
imports them.
"""

import importlib.abc
import importlib.machinery
import sys
from pathlib import Path

__version__ = "0.1.0"


class _CheckoutOperatorFinder(importlib.abc.MetaPathFinder):
    """Finds `hourglass.operator` in a source checkout.

    The operator's modules live in operator/ at the top of the repository, a folder without
    __init__.py, because a regular package named `operator` there would shadow the standard
    library's `operator` for any `python -m ...` run from the checkout. In a wheel the folder
    sits inside the package and Python finds it by itself (a PEP 420 namespace portion), but
    setuptools' editable finder cannot map a namespace folder into a regular package. This
    finder does that, for a checkout only.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def find_spec(
        self, fullname: str, path: object = None, target: object = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != "hourglass.operator":
            return None
        spec = importlib.machinery.ModuleSpec(fullname, None, is_package=True)
        spec.submodule_search_locations = [str(self.folder)]
        return spec


_here = Path(__file__).resolve().parent
if not (_here / "operator").is_dir() and (_here.parent / "operator" / "main.py").is_file():
    sys.meta_path.append(_CheckoutOperatorFinder(_here.parent / "operator"))

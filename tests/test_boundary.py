"""The simulator is a package of its own: the exporter imports it only in the `simulate` and
`demo` commands, so the container image (which leaves it out) runs every other command."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import exporter
from exporter.cli import SIMULATOR_PACKAGE
from tests.test_cli import ROOT

#: The exporter modules that may import the simulator, and why.
SIMULATOR_USERS = {
    "exporter.demo": "the `demo` command runs the simulator",
    "exporter.docs": "a development tool: docs/failures.md's fault matrix is the simulator's",
    "exporter.__main__": "runs the command line when imported",
}


def exporter_modules() -> list[str]:
    return sorted(m.name for m in pkgutil.walk_packages(exporter.__path__, "exporter."))


def simulator_modules_after_importing(modules: list[str], *, block: bool = False) -> list[str]:
    """The simulator's modules loaded by a fresh interpreter that imports `modules`; with
    `block`, the simulator is made unimportable first, as in the container image."""
    code = ((f"import sys; sys.modules[{SIMULATOR_PACKAGE!r}] = None\n" if block else "")
            + "import importlib, sys\n"
            + f"for name in {modules!r}:\n    importlib.import_module(name)\n"
            + f"print(*sorted(m for m in sys.modules if m.split('.')[0] == {SIMULATOR_PACKAGE!r}"
            + " and sys.modules[m] is not None))\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


def test_exporter_modules_do_not_import_the_simulator() -> None:
    modules = [m for m in exporter_modules() if m not in SIMULATOR_USERS]
    assert {"exporter.cli", "exporter.service", "exporter.server"} <= set(modules)
    assert simulator_modules_after_importing(modules) == []
    # ...and they import where the simulator is not installed at all.
    assert simulator_modules_after_importing(modules, block=True) == []


def test_the_demo_imports_the_simulator() -> None:
    # The check above sees the simulator when a module does load it.
    assert SIMULATOR_PACKAGE in simulator_modules_after_importing(["exporter.demo"])


def test_commands_without_the_simulator() -> None:
    """In the image: `run` and `check` parse as usual; `demo` and `simulate` say what is missing."""
    def cli(*argv: str) -> subprocess.CompletedProcess[str]:
        code = (f"import sys; sys.modules[{SIMULATOR_PACKAGE!r}] = None\n"
                f"from exporter.cli import main\nsys.exit(main({list(argv)!r}))\n")
        return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                              text=True, timeout=60, check=False)

    for command in ("run", "check"):
        result = cli(command, "--help")
        assert result.returncode == 0 and "--emqx-url" in result.stdout, result.stderr
    for argv in (["demo", "--help"], ["demo"], ["simulate"]):
        command = argv[0]
        result = cli(*argv)
        assert result.returncode == 2
        assert (f"error: {command} needs the simulator (package {SIMULATOR_PACKAGE}), which "
                f"the container image leaves out") in result.stderr

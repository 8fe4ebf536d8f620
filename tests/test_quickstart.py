"""README's quick start, run as a new user would: from a fresh `git clone` of the committed
repository (HEAD: uncommitted changes are not in it), `make demo` (with a free port), then the
banner's commands. The package built from that clone must build without warnings.

To stay fast, the virtualenv `make` would create is made here instead: the wheel built from the
clone is installed into a new venv that borrows this venv's dependencies, and `make` is pointed
at it with `VENV=` (the Makefile's variable). The commands run are README's.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import sysconfig
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from exporter import __version__
from tests.exposition import by_name, samples_text
from tests.ports import free_port
from tests.test_cli import ROOT, get, wait_for
from tests.test_demo import banner_command, read_banner, require_command


@dataclass(frozen=True)
class Build:
    clone: Path
    wheel: Path
    output: str


@pytest.fixture(scope="module")
def build(tmp_path_factory: pytest.TempPathFactory) -> Build:
    """A fresh clone of the committed tree, and its wheel built by the build-system's backend
    (the hooks pip calls), with the output the backend printed."""
    git = require_command("git", "git")
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: nothing committed to clone")
    base = tmp_path_factory.mktemp("fresh")
    clone = base / "clone"
    subprocess.run([git, "clone", "--quiet", str(ROOT), str(clone)], check=True, timeout=120)
    metadata, dist, editable = base / "metadata", base / "dist", base / "editable"
    for directory in (metadata, dist, editable):
        directory.mkdir()
    # `pip install .` calls the first three, `pip install -e .` (the Makefile) the last two.
    hooks = ("import sys, setuptools.build_meta as backend\n"
             "metadata, dist, editable = sys.argv[1:]\n"  # the hooks rewrite sys.argv
             "backend.get_requires_for_build_wheel()\n"
             "backend.prepare_metadata_for_build_wheel(metadata)\n"
             "backend.build_wheel(dist)\n"
             "backend.get_requires_for_build_editable()\n"
             "backend.build_editable(editable)\n")
    # This machine's PYTHONDONTWRITEBYTECODE makes setuptools warn that it skips byte-compiling.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    # -W error: any Python warning of the backend (deprecations, notices) fails the build.
    result = subprocess.run([sys.executable, "-W", "error", "-c", hooks, str(metadata),
                             str(dist), str(editable)], cwd=clone, env=env,
                            capture_output=True, timeout=300, check=False)
    output = (result.stdout + result.stderr).decode()
    assert result.returncode == 0, output
    (wheel,) = dist.glob("*.whl")
    return Build(clone, wheel, output)


def test_package_builds_without_warnings(build: Build) -> None:
    warnings = [line for line in build.output.splitlines() if re.search(r"warn", line, re.I)]
    assert warnings == [], build.output
    with zipfile.ZipFile(build.wheel) as wheel:
        (name,) = (n for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))
        metadata = wheel.read(name).decode()
    assert f"\nVersion: {__version__}\n" in metadata  # from exporter.__version__
    assert "\nLicense-Expression: Apache-2.0\n" in metadata
    assert "\nProvides-Extra: dev\n" in metadata


def quick_start_commands() -> list[str]:
    """The commands of README's quick start block, comments dropped."""
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Quick start\n", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block is not None, "README's quick start has no sh block"
    return [line.split("#", 1)[0].strip() for line in block[1].splitlines()
            if line.split("#", 1)[0].strip()]


def readme_banner_excerpt() -> list[str]:
    """The lines of the demo banner README's quick start shows (its `...` left out)."""
    section = (ROOT / "README.md").read_text().split("\n## Quick start\n", 1)[1]
    block = re.search(r"```text\n(Demo running:.*?)```", section, re.S)
    assert block is not None, "README's quick start shows no demo banner"
    return [line for line in block[1].splitlines() if line != "..."]


def test_readme_quick_start_is_two_commands() -> None:
    assert quick_start_commands() == ["make demo", "make test"]


@pytest.fixture(scope="module")
def venv(build: Build, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What `make` would create: a venv with the clone's wheel installed and its entry point.
    Its dependencies come from this venv (a path in a .pth file), so no download is needed."""
    path = tmp_path_factory.mktemp("made") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True,
                   timeout=120)
    python = path / "bin" / "python"
    purelib = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_path("
                              "'purelib'))"], capture_output=True, check=True, timeout=60)
    site = Path(purelib.stdout.decode().strip())
    (site / "borrowed-dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    result = subprocess.run([python, "-m", "pip", "install", "--quiet", "--no-deps",
                             "--no-index", "--ignore-installed", "--disable-pip-version-check",
                             str(build.wheel)], capture_output=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr.decode()
    assert not re.search(r"warn", (result.stdout + result.stderr).decode(), re.I)
    # `make` installs when pyproject.toml is newer than this mark; the clone's is older now.
    (path / "bin" / ".installed").touch()
    return path


@pytest.fixture
def make_demo(build: Build, venv: Path, tmp_path: Path) -> Iterator[tuple[
        subprocess.Popen[bytes], Path, int]]:
    """README's `make demo` in the clone, with a free port passed through ARGS."""
    make = require_command("make", "make")
    (command,) = (c for c in quick_start_commands() if c.startswith("make demo"))
    port = free_port()
    output = tmp_path / "make-demo.out"
    argv = [make, *shlex.split(command)[1:], f"ARGS=--listen 127.0.0.1:{port}"]
    with output.open("wb") as sink:
        process = subprocess.Popen(argv, cwd=build.clone, env={**os.environ, "VENV": str(venv)},
                                   stdout=sink, stderr=subprocess.STDOUT,
                                   start_new_session=True)  # make and the demo: one group
    try:
        yield process, output, port
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=30)


def test_readme_make_demo_from_a_fresh_clone(make_demo: tuple[subprocess.Popen[bytes], Path,
                                                              int], venv: Path) -> None:
    curl = require_command("curl", "curl")
    process, output, port = make_demo
    banner = read_banner(output, process)
    # The demo `make` started is the clone's, installed in the venv given to make.
    assert f"{venv}/bin/emqx-client-exporter demo --listen 127.0.0.1:{port}" in banner
    url = f"http://127.0.0.1:{port}"
    assert f"  metrics:    {url}/metrics\n" in banner
    # README's excerpt of the banner is what the demo prints (ports aside).
    sim_port = re.search(r"simulator:  http://127\.0\.0\.1:(\d+)/", banner)
    assert sim_port is not None
    for line in readme_banner_excerpt():
        assert line.replace(":41443/", f":{sim_port[1]}/").replace(":9877/", f":{port}/") in (
            banner.splitlines()), line

    wait_for(f"{url}/-/ready", process)
    samples = samples_text(get(f"{url}/metrics")[1].decode())
    assert by_name(samples, "emqx_client_exporter_up") == {(): 1.0}
    online = by_name(samples, "emqx_clients_online")
    assert len(online) > 1 and sum(online.values()) > 0

    nodes_curl = banner_command(banner, "curl -u ")
    answer = subprocess.run([curl, "-sS", "--fail", *shlex.split(nodes_curl)[1:]],
                            capture_output=True, timeout=30, check=False)
    assert answer.returncode == 0, answer.stderr.decode()
    assert len(json.loads(answer.stdout)) == 3  # the simulator's nodes

    first_look = banner_command(banner, "curl -s ")
    shown = subprocess.run(["sh", "-c", first_look], capture_output=True, timeout=30,
                           check=True).stdout.decode()
    assert "emqx_client_exporter_up 1.0" in shown


def test_make_demo_on_a_taken_port_says_how_to_pass_the_flag(build: Build, venv: Path) -> None:
    make = require_command("make", "make")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run([make, "demo", f"ARGS=--listen 127.0.0.1:{port}"],
                                cwd=build.clone, env={**os.environ, "VENV": str(venv)},
                                capture_output=True, timeout=120, check=False)
    assert result.returncode != 0
    err = result.stderr.decode()
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use; choose another " \
           "address with --listen HOST:PORT\n" in err
    assert 'make demo: flags go through ARGS, e.g. make demo ARGS="--listen 127.0.0.1:9900"' in err

"""Developer sessions: `uv run nox -s tests | lint | typecheck | build | bench`.

Every session builds its environment with uv from the committed `uv.lock`, so a
session on a fresh machine runs exactly what CI runs.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import nox

nox.options.default_venv_backend = "uv"
nox.options.sessions = ["tests", "lint"]

ROOT = Path(__file__).parent
PACKAGES = [
    "trajloom-encoding",
    "trajloom-metrics",
    "trajloom-data",
    "trajloom-vae",
    "trajloom-flow",
]
APPS = ["trajloom-train", "trajloom-sample", "trajloom-bench", "trajloom-demo"]
# the import that proves a wheel works, per distribution
IMPORTS = {
    "trajloom-encoding": "trajloom.encoding",
    "trajloom-metrics": "trajloom.metrics",
    "trajloom-data": "trajloom.data",
    "trajloom-vae": "trajloom.vae",
    "trajloom-flow": "trajloom.flow",
}
# sibling wheels each package needs in a fresh venv (they are not on PyPI yet)
SIBLINGS = {
    "trajloom-encoding": [],
    "trajloom-metrics": [],
    "trajloom-data": ["trajloom-encoding"],
    "trajloom-vae": ["trajloom-encoding"],
    "trajloom-flow": ["trajloom-encoding", "trajloom-vae"],
}


def _sync(session: nox.Session, *extra: str) -> None:
    """Install the locked workspace (all members + dev group) into the session's venv."""
    session.run_install(
        "uv",
        "sync",
        "--locked",
        *extra,
        env={"UV_PROJECT_ENVIRONMENT": session.virtualenv.location},
    )


@nox.session
def tests(session: nox.Session) -> None:
    """The whole suite on CPU; `slow` and `gpu` tests are excluded (pass `-- -m slow` to run them)."""
    _sync(session)
    session.run("pytest", *(session.posargs or ["-q"]))


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check."""
    _sync(session)
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy over the library packages (settings in pyproject.toml)."""
    _sync(session)
    session.run("mypy", *[f"packages/{p}/src/trajloom" for p in PACKAGES])


@nox.session
def build(session: nox.Session) -> None:
    """Build each package's wheel and import it alone in a fresh venv.

    `trajloom-metrics` is installed into a venv without torch, and the session asserts
    that torch is absent and that the metrics still import (numpy and scipy only).
    """
    dist = Path(tempfile.mkdtemp(prefix="trajloom-dist-"))
    for name in PACKAGES + APPS:
        session.run("uv", "build", "--package", name, "--wheel", "--out-dir", str(dist))
    for name in PACKAGES:
        wheels = [_wheel(dist, name)] + [_wheel(dist, s) for s in SIBLINGS[name]]
        venv = Path(tempfile.mkdtemp(prefix=f"{name}-venv-"))
        session.run("uv", "venv", "--quiet", "--python", "3.11", str(venv))
        python = str(venv / "bin" / "python")
        session.run("uv", "pip", "install", "--quiet", "--python", python, *map(str, wheels))
        module = IMPORTS[name]
        check = (
            "import importlib, importlib.util, pathlib, sys\n"
            f"m = importlib.import_module({module!r})\n"
            "assert 'site-packages' in str(pathlib.Path(m.__file__)), m.__file__\n"
            "ns = importlib.import_module('trajloom')\n"
            "assert getattr(ns, '__file__', None) is None, 'trajloom must be a namespace'\n"
            f"print('{name}: imported', m.__name__, 'from', m.__file__)\n"
        )
        if name == "trajloom-metrics":
            check += (
                "assert importlib.util.find_spec('torch') is None, 'torch is installed'\n"
                "assert 'torch' not in sys.modules\n"
                "print('trajloom-metrics: torch absent, metrics import fine')\n"
            )
        session.run(python, "-c", check, external=True)
        shutil.rmtree(venv)
    shutil.rmtree(dist)


def _wheel(dist: Path, name: str) -> Path:
    found = sorted(dist.glob(name.replace("-", "_") + "-*.whl"))
    if not found:
        raise RuntimeError(f"no wheel for {name} in {dist}")
    return found[-1]


@nox.session
def bench(session: nox.Session) -> None:
    """Run every script in benchmarks/ (quick settings unless `-- --full` is given).

    `benchmarks/gpu.py` needs a CUDA device: it runs only with `-- --gpu`.
    """
    _sync(session)
    full = "--full" in session.posargs
    for script in sorted((ROOT / "benchmarks").glob("*.py")):
        if script.name == "gpu.py" and "--gpu" not in session.posargs:
            session.log("skipping benchmarks/gpu.py (needs CUDA; pass `-- --gpu`)")
            continue
        args = [] if full else ["--quick"]
        session.run("python", str(script), *args)

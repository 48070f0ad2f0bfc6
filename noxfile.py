"""Local CI: one session per step of upstream's ``ci-local.sh bitnet-server-receipts``, and more.

``./ci-local.sh`` (or ``kvreceipts validate``) runs these sessions and gives the verdict; a
skipped session is a failure there, which nox alone would not say. ``nox -s NAME`` runs one.
Dependencies come only from ``[dependency-groups]`` in ``pyproject.toml``.
"""

from __future__ import annotations

import hashlib
import json
import os
import xml.etree.ElementTree as ET
from pathlib import Path

import nox
from packaging.requirements import Requirement
from packaging.version import Version

nox.needs_version = ">=2026.8.10"  # --parallel/-j and allow_parallel
nox.options.default_venv_backend = "uv|virtualenv"  # virtualenv + pip when uv is absent
nox.options.download_python = "never"  # offline machines: a missing interpreter is reported
nox.options.error_on_external_run = True
nox.options.allow_parallel = True  # sessions share no state that matters; `nox -j 2` works

ROOT = Path(__file__).resolve().parent
PYPROJECT = nox.project.load_toml(ROOT / "pyproject.toml")
MSRV = "3.11"
NEWEST = "3.13"
TEST_ENV = {"KVRECEIPTS_REQUIRE_TRACES": "1"}
# Every test runs in full twice: with every feature on Python 3.11 (features(receipts,tuning),
# with crosscheck for the oracle tests) and on the newest Python (tests). The sessions that
# repeat the suite under other features or dependency versions leave out the tests marked
# slow (real processes, long campaigns) and the oracle, and draw fewer hypothesis examples.
FULL = ("-p", "no:cacheprovider")
REPEAT = ("-p", "no:cacheprovider", "-m", "not slow and not oracle")
FEATURES_ENV = "KVRECEIPTS_FEATURES"
ALL_FEATURES = "receipts,tuning"
HAPPY_TEST = "emits_eviction_receipt_with_correct_payload"
GUARD_TEST = "does_not_emit_receipt_when_disabled"


def _expose_pyenv_interpreters() -> None:
    """Let nox's interpreter discovery see every installed pyenv CPython 3.x.

    Discovery resolves pyenv shims through ``PYENV_VERSION``; without it only the active version
    is found and ``python="3.13"`` is skipped as missing. The active versions stay first.
    """
    pyenv_root = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv")
    versions = pyenv_root / "versions"
    if not versions.is_dir():
        return
    active = [v for v in os.environ.get("PYENV_VERSION", "").split(":") if v]
    if not active:
        for version_file in (ROOT / ".python-version", pyenv_root / "version"):
            if version_file.is_file():
                lines = version_file.read_text(encoding="utf-8").splitlines()
                active = [v.strip() for v in lines if v.strip() and not v.startswith("#")]
                break
    installed = sorted(p.name for p in versions.glob("3.*") if (p / "bin").is_dir())
    os.environ["PYENV_VERSION"] = ":".join(active + [v for v in installed if v not in active])


_expose_pyenv_interpreters()
# Byte-code caching makes every pytest start-up much cheaper; the caches stay in the
# session venvs and in gitignored __pycache__ folders.
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)


def _install(session: nox.Session, *groups: str, project: bool = True) -> None:
    """Install dependency groups and (editable) the project, in one resolver call.

    ``uv pip install`` rebuilds a local project on every call (~1 s), so the project is
    reinstalled only when ``pyproject.toml`` changed since this venv last installed it.
    """
    args = [arg for group in groups for arg in ("--group", group)]
    if not project:
        session.install(*args)
        return
    stamp = Path(session.virtualenv.location) / ".kvreceipts-installed"
    key = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if stamp.is_file() and stamp.read_text(encoding="utf-8") == key:
        if args:
            session.install(*args)
        return
    session.install(*args, "-e", ".")
    stamp.write_text(key, encoding="utf-8")


def _pytest(
    session: nox.Session, *args: str, junit: str | None = None, profile: str = "ci"
) -> None:
    """Run pytest with a hypothesis profile (ci, or quick for repeats); posargs go to pytest."""
    extra = [f"--junitxml={junit}"] if junit else []
    env = {**TEST_ENV, "HYPOTHESIS_PROFILE": profile}
    session.run("pytest", *args, *extra, *session.posargs, env=env)


def _only_test(session: nox.Session, name: str) -> None:
    """Run one test by name (each of its parameters: both receipt layouts) and fail unless it
    ran and passed (a skip is not a pass).
    """
    junit = str(Path(session.create_tmp()) / f"{name}.xml")
    _pytest(session, "-k", name, junit=junit)
    root = ET.parse(junit).getroot()  # noqa: S314 - pytest just wrote this file
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    if suite is None:
        session.error(f"{junit}: pytest wrote no test suite")
    ran = int(suite.get("tests", "0"))
    skipped = int(suite.get("skipped", "0"))
    if ran != 2 or skipped:  # one run per layout: lean and upstream
        session.error(
            f"{name}: expected 2 runs (lean, upstream) to pass, got {ran} ({skipped} skipped)"
        )


def _smoke(session: nox.Session, features: str) -> None:
    """Compile and import the package, force an eviction, check the feature gates."""
    session.run("python", "-m", "kvreceipts.validation.smoke", "--expect", features)
    session.run("kvreceipts", "--version")


@nox.session(tags=["test"])
def baseline(session: nox.Session) -> None:
    """Step 1: no features (KVRECEIPTS_FEATURES=""): import smoke and the feature-free tests."""
    session.env[FEATURES_ENV] = ""
    _install(session, "test")
    _smoke(session, "")
    _pytest(session, *REPEAT, profile="quick")


@nox.session(tags=["lint"])
def lint(session: nox.Session) -> None:
    """Step 2: ruff check (the broad rule set) and mypy --strict."""
    _install(session, "lint")
    session.run("ruff", "check")
    # mypy reads its files from pyproject.toml; a listed folder with no Python yet is skipped
    # (mypy refuses an empty folder).
    files = [f for f in PYPROJECT["tool"]["mypy"]["files"] if _has_python(ROOT / f)]
    session.run("mypy", *files)


def _has_python(path: Path) -> bool:
    return path.is_file() or any(path.rglob("*.py"))


@nox.session(tags=["lint"])
def format(session: nox.Session) -> None:  # noqa: A001 - the session is called format
    """Step 3: ruff format --check."""
    _install(session, "format", project=False)
    session.run("ruff", "format", "--check")


@nox.session(tags=["docs"])
def docs(session: nox.Session) -> None:
    """Step 4: mkdocs build --strict (API pages by mkdocstrings, the CLI reference)."""
    _install(session, "docs", project=False)
    session.env["NO_MKDOCS_2_WARNING"] = "1"  # mkdocs-material's end-of-life banner
    session.run("mkdocs", "build", "--strict", "--site-dir", str(ROOT / "site"))


@nox.session(python=MSRV, tags=["msrv", "test"], reuse_venv=False)
def msrv(session: nox.Session) -> None:
    """Step 5: tests on Python 3.11 with the lowest declared dependencies, and vermin."""
    # A fresh venv each run: lowest-direct never downgrades packages already installed.
    if session.venv_backend != "uv":
        session.error("the msrv step needs uv (--resolution lowest-direct); install uv")
    session.env[FEATURES_ENV] = None
    groups = ("test", "msrv")
    session.install("--resolution", "lowest-direct", *(f"--group={g}" for g in groups), ".")
    _check_floors(session, groups)
    session.run("vermin", f"-t={MSRV}-", "--no-tips", "--violations", "--eval-annotations", "src")
    _pytest(session, *REPEAT, profile="quick")


_INSTALLED_VERSIONS = (
    "import importlib.metadata as m, json, sys; "
    "print(json.dumps({name: m.version(name) for name in sys.argv[1:]}))"
)


def _check_floors(session: nox.Session, groups: tuple[str, ...]) -> None:
    """Fail unless every direct dependency was installed at exactly its declared floor.

    A floor that cannot resolve (another dependency needs more) would otherwise pass untested.
    """
    requirements = [
        Requirement(text)
        for text in [
            *PYPROJECT["project"]["dependencies"],
            *nox.project.dependency_groups(PYPROJECT, *groups),
        ]
    ]
    floors = {
        req.name: spec.version
        for req in requirements
        for spec in req.specifier
        if spec.operator == ">=" and (req.marker is None or req.marker.evaluate())
    }
    output = session.run("python", "-c", _INSTALLED_VERSIONS, *floors, silent=True)
    installed: dict[str, str] = json.loads(str(output).strip().splitlines()[-1])
    wrong = [
        f"{name} {installed[name]} (declared >={floor})"
        for name, floor in floors.items()
        if Version(installed[name]) != Version(floor)
    ]
    if wrong:
        session.error(
            "the lowest resolvable versions are not the declared floors; raise them in "
            f"pyproject.toml: {', '.join(wrong)}"
        )
    session.log(f"every direct dependency is at its declared floor ({len(floors)} checked)")


@nox.session(tags=["features", "test"])
@nox.parametrize(
    "features",
    [
        nox.param("receipts", id="receipts"),
        nox.param("tuning", id="tuning"),
        nox.param(ALL_FEATURES, id=ALL_FEATURES),
    ],
)
def features(session: nox.Session, features: str) -> None:
    """Steps 6-7: a feature combination: compile/import check and the tests under it."""
    session.env[FEATURES_ENV] = features
    _install(session, "test")
    _smoke(session, features)
    if features == ALL_FEATURES:
        _pytest(session, *FULL, "-m", "not oracle")  # crosscheck runs the oracle
    else:
        _pytest(session, *REPEAT, profile="quick")


@nox.session(tags=["test"])
def happy(session: nox.Session) -> None:
    """Step 8: the happy path alone, receipts on (feature and enable_receipts)."""
    session.env[FEATURES_ENV] = "receipts"
    _install(session, "test")
    _only_test(session, HAPPY_TEST)


@nox.session(tags=["test"])
def guard(session: nox.Session) -> None:
    """Step 9: the guard path alone: receipts feature on, enable_receipts off, no receipt."""
    session.env[FEATURES_ENV] = "receipts"
    _install(session, "test")
    _only_test(session, GUARD_TEST)


@nox.session(python=NEWEST, tags=["test"])
def tests(session: nox.Session) -> None:
    """The whole test suite on the newest Python, every feature on (the default)."""
    session.env[FEATURES_ENV] = None
    _install(session, "test")
    _pytest(session, *FULL)


@nox.session(tags=["test"])
def crosscheck(session: nox.Session) -> None:
    """The libCacheSim oracle on the real traces (pytest -m oracle)."""
    session.env[FEATURES_ENV] = ALL_FEATURES
    _install(session, "test")
    _pytest(session, *FULL, "-m", "oracle")


@nox.session(name="engine-compat", tags=["test"])
def engine_compat(session: nox.Session) -> None:
    """``watch`` against the engines' own publishers: vLLM 0.10.2 and 0.34.0, SGLang 0.5.10
    and 0.5.23, each ``kv_events.py`` read from its wheel (``pip download --no-deps``, cached
    in ~/.cache/kvreceipts-tests/wheels) and run with stubs for its imports.
    """
    session.env[FEATURES_ENV] = ALL_FEATURES
    session.env["KVRECEIPTS_ENGINE_COMPAT"] = "1"
    _install(session, "test")
    session.install("pip")  # the test downloads the wheels with `python -m pip download`
    _pytest(session, *FULL, "-m", "engine_compat", "tests/test_engine_compat.py")


FUZZ_EXAMPLES = "150"
"""Examples per generated-input test in the default (short) run; KVRECEIPTS_FUZZ_EXAMPLES sets
more for a campaign."""
FUZZ_SECONDS = "60"


@nox.session(tags=["fuzz", "test"])
def fuzz(session: nox.Session) -> None:
    """Step 13: generated input at every reader, then coverage-guided byte mutation.

    The hypothesis tests of tests/test_fuzz_readers.py and tests/test_hostile.py, then
    tests/fuzz_atheris.py (libFuzzer) on real files for FUZZ_SECONDS; posargs go to it, e.g.
    ``nox -s fuzz -- --seconds 3600 --corpus .fuzz-corpus``. Crashing inputs land in the
    session's tmp folder (the log names it).
    """
    session.env[FEATURES_ENV] = None
    _install(session, "fuzz")
    examples = os.environ.get("KVRECEIPTS_FUZZ_EXAMPLES", FUZZ_EXAMPLES)
    env = {**TEST_ENV, "HYPOTHESIS_PROFILE": "fuzz", "KVRECEIPTS_FUZZ_EXAMPLES": examples}
    session.run("pytest", *FULL, "-m", "not slow", "tests/test_fuzz_readers.py",
                "tests/test_hostile.py", env=env)  # fmt: skip
    artifacts = str(Path(session.create_tmp()) / "fuzz-crashes")
    args = session.posargs or ["--seconds", FUZZ_SECONDS]
    session.run("python", "tests/fuzz_atheris.py", "--artifacts", artifacts, *args)


MUTATED = ("chain", "policies", "paged", "sweep.methods", "engine.session", "verify", "proofs")
"""The modules ``mutants`` mutates by default (pyproject.toml [tool.mutmut] lists their files)."""


@nox.session(tags=["mutants"], default=False)
def mutants(session: nox.Session) -> None:
    """Mutation testing (mutmut) of the modules that decide a verdict or a figure; not in CI.

    posargs pick modules by name (``nox -s mutants -- chain policies``); the default is all of
    MUTATED. Prints each module's score (killed / mutants) at the end; ``mutmut results`` in
    the checkout lists the survivors. Run it niced: it takes hours on two cores.
    """
    session.env[FEATURES_ENV] = None
    session.env.pop("PYTHONPATH", None)  # mutmut must import its mutated copy, not src/
    _install(session, "mutants")
    names = session.posargs or list(MUTATED)
    session.run("mutmut", "run", *(f"kvreceipts.{name}*" for name in names),
                success_codes=[0, 1])  # fmt: skip
    session.run("python", str(ROOT / "scripts" / "mutants_score.py"), *names)


@nox.session(tags=["bench"], default=False)
def bench(session: nox.Session) -> None:
    """Benchmarks (scripts/bench.py; posargs go to the script). Not in the default set."""
    script = ROOT / "scripts" / "bench.py"
    if not script.is_file():
        session.error(f"{script.relative_to(ROOT)} does not exist yet: nothing to benchmark")
    session.env[FEATURES_ENV] = None
    _install(session, "test")
    session.run("python", str(script), *session.posargs)

import base64
import compileall
import gc
import json
import os
from collections.abc import Iterator

import coverage
import pytest

from sidecar.testing import RunningSidecar, SidecarProcess, running_sidecar

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def pytest_sessionstart(session: pytest.Session) -> None:
    """The e2e tests start `python -m sidecar` processes by the dozen. PYTHONDONTWRITEBYTECODE (set
    here and in CI) keeps each from writing the package's bytecode, so each compiled every module
    from source again: ~0.25 s of every start. Written once here, they all read it."""
    compileall.compile_dir(os.path.join(REPO, "sidecar"), quiet=1)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):  # type: ignore[no-untyped-def]
    """In CI every real tool (promtool, Prometheus, Chromium, ...) is installed by .ci/run, so a skip
    means a missing install step or a broken fixture: report it as a failure, not a quiet 's'."""
    outcome = yield
    report = outcome.get_result()
    if IN_CI and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped in CI (CI=true), which counts as a failure: {reason}"


# SIDECAR_COVERAGE_OWNERS=1: record which test started each process whose lines coverage measured,
# for tests/coverage_owners.py (which tests can be `untraced`); `untraced` is ignored meanwhile.
OWNERS = bool(os.environ.get("SIDECAR_COVERAGE_OWNERS"))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    """The processes an `untraced` test starts (`python -m sidecar`, the CLI, clients) run without
    coverage too: coverage's `patch = subprocess` starts it in every Python process that inherits
    COVERAGE_PROCESS_CONFIG, and its tracer made each sidecar take ~0.5 s longer to be ready."""
    config = os.environ.get("COVERAGE_PROCESS_CONFIG")
    if config is not None and OWNERS:
        os.environ["COVERAGE_PROCESS_CONFIG"] = with_context(config, "process:" + item.nodeid)
    elif config is not None and item.get_closest_marker("untraced"):
        del os.environ["COVERAGE_PROCESS_CONFIG"]
    else:
        config = None
    try:
        yield
    finally:
        if config is not None:
            os.environ["COVERAGE_PROCESS_CONFIG"] = config


def with_context(config: str, context: str) -> str:
    """COVERAGE_PROCESS_CONFIG (coverage's serialized config: base64 of JSON) with a static context."""
    data = json.loads(base64.b64decode(config))
    data["context"] = context
    return base64.b64encode(json.dumps(data).encode()).decode()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    """A test marked `untraced` runs without coverage's line tracer: the property and fuzz tests
    that push thousands of examples through code the focused tests cover (the tracer doubled
    their time), and end-to-end tests whose lines, in-process and in the processes they start,
    other tests cover too. pytest-cov's own `no_cover` marker raises under --no-cov, hence this one."""
    cov = coverage.Coverage.current() if item.get_closest_marker("untraced") and not OWNERS else None
    if cov is None:
        yield
        return
    cov.stop()
    try:
        yield
    finally:
        cov.start()


@pytest.fixture
def sidecar() -> Iterator[RunningSidecar]:
    """A real sidecar (uvicorn + Unix listener) in a thread, default config."""
    with running_sidecar() as s:
        yield s


@pytest.fixture
def spawn(tmp_path):
    """Start real `agent-sidecar run` processes; all are stopped at teardown."""
    procs: list[SidecarProcess] = []

    def start(*args: str, config: str | None = None) -> SidecarProcess:
        argv = ["--http", "127.0.0.1:0", "--unix", str(tmp_path / f"s{len(procs)}.sock"), *args]
        if config is not None:
            path = tmp_path / f"config{len(procs)}.yaml"
            path.write_text(config)
            argv += ["--config", str(path)]
        # PYTHONPATH makes the child import this checkout, even from a git worktree.
        proc = SidecarProcess(argv, env={"PYTHONPATH": REPO})
        procs.append(proc)
        return proc

    yield start
    for p in procs:
        if p.proc.poll() is None:
            p.proc.kill()
        p.stop()


@pytest.fixture(autouse=True)
def collector_as_it_was() -> Iterator[None]:
    """`agent-sidecar run` tunes and freezes the garbage collector for its process; a test that runs
    it in-process must not hand that to the tests after it (it changed what a collection untracks)."""
    threshold = gc.get_threshold()
    yield
    gc.set_threshold(*threshold)
    gc.unfreeze()


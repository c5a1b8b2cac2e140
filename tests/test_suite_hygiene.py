"""The suite itself must not hide failures: a failing property test shows its example, and in CI a
missing real tool fails the run instead of skipping (see the hook in tests/conftest.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _run_pytest(tmp_path: Path, body: str, *, ci: bool) -> subprocess.CompletedProcess[str]:
    """Run a throwaway test file under this repository's own pytest configuration and conftest."""
    test = REPO / "tests" / f"test_tmp_hygiene_{os.getpid()}_{tmp_path.name}.py"
    test.write_text(textwrap.dedent(body))
    env = {**os.environ, "CI": "true" if ci else ""}
    env.pop("COV_CORE_SOURCE", None)  # the child needs no coverage of its own
    try:
        return subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--no-cov", "--assert=plain", str(test)],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
        )
    finally:
        test.unlink()


@pytest.mark.untraced
def test_failing_property_test_reports_its_falsifying_example(tmp_path):
    result = _run_pytest(tmp_path, """
        from hypothesis import given, strategies as st

        @given(st.integers())
        def test_small(x):
            assert x < 5
    """, ci=False)
    assert "INTERNALERROR" not in result.stdout + result.stderr
    assert "Falsifying example" in result.stdout
    assert "1 failed" in result.stdout


@pytest.mark.untraced
def test_a_skip_fails_the_run_in_ci(tmp_path):
    body = """
        import pytest

        def test_needs_a_tool():
            pytest.skip("no such tool (apt-get install it)")
    """
    local = _run_pytest(tmp_path, body, ci=False)
    assert local.returncode == 0 and "1 skipped" in local.stdout
    ci = _run_pytest(tmp_path, body, ci=True)
    assert ci.returncode == 1 and "1 failed" in ci.stdout
    assert "skipped in CI" in ci.stdout and "no such tool" in ci.stdout

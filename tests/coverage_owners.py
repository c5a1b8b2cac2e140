"""Which tests may be marked `untraced` (no coverage in-process or in the processes they start,
tests/conftest.py) without a covered line going uncovered, and which marked ones may not.

    SIDECAR_COVERAGE_OWNERS=1 python3 -m pytest -p no:cacheprovider --cov-context=test --durations=0 > durations.log
    python3 tests/coverage_owners.py .coverage durations.log

The run records, for every covered line, the tests that reached it: in the pytest process (pytest-cov's
test contexts) and in every process a test started (conftest tags their coverage with the test's id),
with `untraced` switched off for the run. A marked test may keep its mark while each line it reaches
is reached by an unmarked test too; an unmarked test that starts processes may take the mark on the
same terms. Candidates are taken longest first, each against the marks so far.
"""

from __future__ import annotations

import collections
import os
import re
import subprocess
import sys

from coverage.data import CoverageData

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def owner(context: str) -> tuple[str | None, bool]:
    """(the test a context belongs to, whether it was a started process); None: no test's."""
    if context.startswith("process:"):
        return context.removeprefix("process:"), True
    if "|" in context:  # pytest-cov: "<nodeid>|setup", "|run", "|teardown"
        return context.rsplit("|", 1)[0], False
    return None, False


def marked_now() -> set[str]:
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-m", "untraced", "--no-cov", "-p", "no:cacheprovider"],
        cwd=REPO, capture_output=True, text=True, check=True,
    ).stdout
    return {line for line in out.splitlines() if "::" in line}


def main() -> None:
    data = CoverageData(basename=sys.argv[1])
    data.read()
    seconds: collections.Counter[str] = collections.Counter()
    with open(sys.argv[2]) as log:
        for line in log:
            found = re.match(r"^([0-9.]+)s (?:call|setup|teardown)\s+(.+)$", line.rstrip())
            if found:
                seconds[found[2]] += float(found[1])
    reached_by: dict[tuple[str, int], set[str | None]] = collections.defaultdict(set)
    lines_of: dict[str, set[tuple[str, int]]] = collections.defaultdict(set)
    starters: set[str] = set()
    for path in data.measured_files():
        for lineno, contexts in data.contexts_by_lineno(path).items():
            for context in contexts:
                test, process = owner(context)
                reached_by[(path, lineno)].add(test)
                if test is not None:
                    lines_of[test].add((path, lineno))
                    if process:
                        starters.add(test)
    if not starters:
        raise SystemExit("no process was tagged with its test: run pytest with SIDECAR_COVERAGE_OWNERS=1 (see the docstring)")
    marked = {test for test in marked_now() if test in lines_of}

    def covered_without(test: str) -> bool:
        return all(any(o is None or (o != test and o not in marked) for o in reached_by[key]) for key in lines_of[test])

    alone = sorted(t for t in marked if not covered_without(t))
    for test in alone:
        marked.discard(test)
    print(f"{len(reached_by)} covered lines, {len(lines_of)} tests, {len(starters)} start traced processes")
    print(f"marked tests that alone reach a line (it stays uncovered while they keep the mark): {len(alone)}")
    for test in alone:
        only = [f"{os.path.relpath(p, REPO)}:{n}" for p, n in sorted(lines_of[test]) if all(o == test or o in marked for o in reached_by[(p, n)] if o)]
        print(f"  {test}: {', '.join(only[:5])}")
    added = []
    for test in sorted(starters - marked, key=lambda t: -seconds[t]):
        if covered_without(test):
            marked.add(test)
            added.append(test)
    print(f"tests that may be marked too: {len(added)} ({sum(seconds[t] for t in added):.0f} s in this run)")
    for test in added:
        print(f"  {seconds[test]:6.2f} s  {test}")


if __name__ == "__main__":
    main()

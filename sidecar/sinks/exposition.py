"""The agent_* exposition without prometheus_client's per-sample objects: text and OpenMetrics.

prometheus_client builds a Sample (a dict of labels) per line and escapes every label name and
value on every scrape; at the cap that is ~190k objects and ~3 s. Here each series renders its
label block once, when it is created (`label_block`, `split_block`), and a scrape only formats
numbers into one list of strings, family by family; each table keeps its series' last lines
(`sidecar.sinks.series`), so only the series that changed since the previous scrape are
formatted again. The output is byte for byte what
prometheus_client renders for the same families (tests/sinks/test_exposition.py proves it on
random tables): labels sorted by name, values escaped as it escapes them, numbers as
`floatToGoString` writes them, no `_created` samples (the families are built without one).
Every name and label name here is a legacy Prometheus name, so the negotiated name escaping
(`escaping=` in the Accept header) cannot change a byte of it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from itertools import accumulate

from prometheus_client.utils import floatToGoString

# Set while /metrics renders the registry through prometheus_client for the other collectors:
# the sink then yields nothing from collect() and is appended by its own fast exposition.
exposed_separately: ContextVar[bool] = ContextVar("exposed_separately", default=False)

# Cumulative bucket counts below this are written "%d.0" (what repr(float(n)) gives), in one
# string format per series; Go (and floatToGoString) switch to an exponent at 1e6.
_PLAIN_INT_LIMIT = 1_000_000

# A histogram series' exemplars by bucket index: trace id, span id, value, timestamp.
Exemplars = dict[int, tuple[str, str | None, float, float | None]]


def escape(value: str) -> str:
    """A label value as both formats write it (prometheus_client's `_escape` for label values)."""
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def label_block(names: Sequence[str], values: Sequence[str]) -> str:
    """`a="1",b="2"`: the pairs sorted by name, escaped; what goes between the braces."""
    return ",".join(f'{n}="{escape(v)}"' for n, v in sorted(zip(names, values)))


def split_block(names: Sequence[str], values: Sequence[str], at: str = "le") -> tuple[str, str]:
    """The block around a label `at` that sorts into it at scrape time (a histogram's `le`):
    the pairs before it (ending with a comma) and after it (starting with one), with `%`
    doubled because they become part of a %-format template."""
    pairs = sorted(zip(names, values))
    head = "".join(f'{n}="{escape(v)}",' for n, v in pairs if n < at)
    tail = "".join(f',{n}="{escape(v)}"' for n, v in pairs if n > at)
    return head.replace("%", "%%"), tail.replace("%", "%%")


def go_float(value: float) -> str:
    """floatToGoString, with the common case (a finite value under 1e6 in magnitude) inline."""
    if -1e6 < value < 1e6:
        return repr(float(value))
    text: str = floatToGoString(value)  # type: ignore[no-untyped-call]
    return text


def _header(out: list[str], name: str, doc: str, kind: str, openmetrics: bool) -> None:
    if openmetrics:
        doc = doc.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
    else:
        doc = doc.replace("\\", "\\\\").replace("\n", "\\n")
        if kind == "counter":
            name += "_total"
    out.append(f"# HELP {name} {doc}\n# TYPE {name} {kind}\n")


def scalar_header(out: list[str], name: str, doc: str, kind: str, openmetrics: bool) -> str:
    """A counter or gauge family's header; returns the name its samples are written under."""
    _header(out, name, doc, kind, openmetrics)
    return name + "_total" if kind == "counter" else name


def scalar_line(sample: str, block: str, value: float) -> str:
    """One counter or gauge sample (the same in both formats)."""
    return f"{sample}{{{block}}} {go_float(value)}\n" if block else f"{sample} {go_float(value)}\n"


def scalar_family(
    out: list[str], name: str, doc: str, kind: str, rows: Iterable[tuple[str, float]], openmetrics: bool
) -> None:
    """A counter or gauge family: `rows` are (label block, value)."""
    sample = scalar_header(out, name, doc, kind, openmetrics)
    out.extend([scalar_line(sample, block, value) for block, value in rows])


@dataclass(frozen=True, eq=False)
class HistogramNames:
    """What every series of one histogram family writes besides its own labels and numbers."""

    bucket: str  # `name_bucket{`
    count: str
    total: str
    les: tuple[str, ...]  # the bucket bounds as written; the last is +Inf
    with_count: bool  # prometheus_client drops _count and _sum after a negative bound

    @classmethod
    def of(cls, name: str, les: Sequence[str]) -> HistogramNames:
        return cls(name + "_bucket{", name + "_count", name + "_sum", tuple(les), float(les[0]) >= 0)


def histogram_series(
    names: HistogramNames, block: str, head: str, tail: str, counts: Sequence[int], sum_: float,
    exemplars: Exemplars | None, openmetrics: bool,
) -> str:
    """One histogram series' lines: its buckets (from non-cumulative `counts`, the last +Inf),
    then `_count` and `_sum`. `head` and `tail` are its label block split around `le`."""
    bucket, les, go = names.bucket, names.les, go_float
    cum = list(accumulate(counts))
    shown = exemplars if openmetrics and exemplars else None
    if cum[-1] < _PLAIN_INT_LIMIT and shown is None:
        # One template per series: every bucket line in one C-level format call.
        close = f'"{tail}}} %d.0\n{bucket}{head}le="'
        text = (f'{bucket}{head}le="' + close.join(les) + f'"{tail}}} %d.0\n') % tuple(cum)
    else:
        values = [f"{c}.0" for c in cum] if cum[-1] < _PLAIN_INT_LIMIT else [go(c) for c in cum]
        if shown is not None:
            for i, (trace_id, span_id, value, ts) in shown.items():
                labels = f'trace_id="{trace_id}"' if span_id is None else f'span_id="{span_id}",trace_id="{trace_id}"'
                stamp = "" if ts is None else f" {ts!r}"
                values[i] += f" # {{{labels}}} {go(value)}{stamp}"
        close = f'"{tail}}} %s\n{bucket}{head}le="'
        text = (f'{bucket}{head}le="' + close.join(les) + f'"{tail}}} %s\n') % tuple(values)
    if not names.with_count:
        return text
    if block:
        return f"{text}{names.count}{{{block}}} {go(cum[-1])}\n{names.total}{{{block}}} {go(sum_)}\n"
    return f"{text}{names.count} {go(cum[-1])}\n{names.total} {go(sum_)}\n"


def histogram_family(out: list[str], name: str, doc: str, series: Iterable[str], openmetrics: bool) -> None:
    """A histogram family: its header, then each series' lines (`histogram_series`)."""
    _header(out, name, doc, "histogram", openmetrics)
    out.extend(series)

"""One typed Config, loaded and validated once, then handed down.

The dataclass defaults *are* the embedded default config. `load_config` walks the
YAML document against these dataclasses, collects every problem with its YAML
path, and only returns a Config when the whole document is valid.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml  # type: ignore[import-untyped]  # no stubs in the test extra (types-PyYAML would remove this)

from sidecar.contract import DEFAULT_SOCKET
from sidecar.exceptions import ConfigError

DEFAULT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)

# Field "kind" metadata drives parsing; the Python type is what the rest of the code sees.
# `live=True` declares that a reload applies the key to the running sidecar (sidecar/reload.py);
# every other key keeps its running value until a restart.
def _f(default: Any, kind: str, doc: str, **extra: Any) -> Any:
    meta = {"kind": kind, "doc": doc, **extra}
    if isinstance(default, (list, tuple, dict)):
        container: list[Any] | tuple[Any, ...] | dict[Any, Any] = default

        def copy() -> Any:
            return type(container)(container)

        return field(default_factory=copy, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class ListenConfig:
    http: str = _f("127.0.0.1:8765", "hostport", "HOST:PORT for HTTP (ingest, /metrics, /v1/*); empty disables")
    unix: str = _f(DEFAULT_SOCKET, "path", "Unix stream socket for NDJSON ingest; empty disables")
    unix_mode: int = _f(0o660, "mode", "permission bits of the socket file, e.g. 0660")


@dataclass(frozen=True)
class AuthConfig:
    token: str | None = _f(None, "token", "bearer token required on HTTP ingest and queries (null: no authentication)", live=True)


@dataclass(frozen=True)
class IngestConfig:
    max_event_bytes: int = _f(64 * 1024, "size", "longest accepted line / event")
    max_body_bytes: int = _f(10 * 1024 * 1024, "size", "largest accepted HTTP body (after decompression)", live=True)
    max_clock_skew: float = _f(300.0, "duration", "events stamped further in the future are rejected", live=True)
    queue_size: int = _f(1024, "positive_int", "batches waiting for the pipeline before backpressure / 503")
    max_connections: int = _f(512, "positive_int", "concurrent Unix socket clients (beyond: new ones wait in the backlog)", live=True)
    max_http_connections: int = _f(
        1100, "positive_int", "concurrent HTTP connections, tail WebSockets included (beyond: 503); above tail.max_clients, and with max_connections it must fit `ulimit -n`",
        live=True,
    )
    read_size: int = _f(256 * 1024, "size", "bytes read from a socket client at once")
    idle_timeout: float = _f(300.0, "duration", "a Unix client that delivered no complete event this long is closed (the SDK reconnects)", live=True)
    evict_after: float = _f(10.0, "duration", "at max_connections, a Unix client that delivered no complete event this long makes room for a new one", live=True)
    header_timeout: float = _f(10.0, "duration", "an HTTP request's headers must arrive within this (slowloris)", live=True)
    body_timeout: float = _f(30.0, "duration", "an HTTP request's body must arrive within this of its headers (else 408)", live=True)


@dataclass(frozen=True)
class MetricsConfig:
    max_series_per_metric: int = _f(10_000, "positive_int", "cardinality guard per metric", live=True)
    series_ttl: float = _f(3600.0, "duration", "a series not updated this long leaves /metrics", live=True)
    duration_buckets: tuple[float, ...] = _f(DEFAULT_BUCKETS, "buckets", "histogram bucket bounds in seconds")
    exemplars: bool = _f(True, "bool", "attach {trace_id} exemplars to duration buckets", live=True)


@dataclass(frozen=True)
class LifecycleConfig:
    abandon_after: float = _f(3600.0, "duration", "a run or invocation with no end this long is abandoned", live=True)
    max_active: int = _f(100_000, "positive_int", "runs / invocations tracked at once")


@dataclass(frozen=True)
class WindowsConfig:
    durations: tuple[float, ...] = _f((60.0, 300.0, 900.0, 3600.0), "durations", "rolling windows for /v1/stats")
    max_samples: int = _f(2_000_000, "positive_int", "duration samples kept for window quantiles; past it they are a uniform sample")
    max_events: int = _f(
        2_000_000, "positive_int", "events stored for the largest window (~55 B each); past it the oldest leave early, exact: false"
    )
    cumulative_samples: int = _f(100_000, "positive_int", "durations kept (uniform reservoir) for since-start quantiles")
    prometheus_by: tuple[str, ...] = _f((), "strings", "also export window gauges per value of these fields (agent, workflow, type, model, tool)")
    prometheus_by_limit: int = _f(50, "positive_int", "most active values per window exported per prometheus_by field")
    index_by: tuple[str, ...] = _f((), "strings", "fields whose filters (e.g. agent=) skip the row scan: +8 bytes per event per window")
    snapshot_path: str = _f("", "path", "file the windows are saved to and restored from at start (numpy .npz, ~43 B per event); empty: off")
    snapshot_every: float = _f(30.0, "duration", "save the windows this often (and at shutdown); a crash loses at most this much")


@dataclass(frozen=True)
class TailConfig:
    max_batch: int = _f(500, "positive_int", "events per WebSocket message", live=True)
    client_queue: int = _f(10_000, "positive_int", "events buffered per client before the oldest drop", live=True)
    client_queue_bytes: int = _f(8 * 1024 * 1024, "size", "bytes of events buffered per client before the oldest drop (the newest is always kept)", live=True)
    max_clients: int = _f(1000, "positive_int", "concurrent tail clients (beyond: close 1013)", live=True)
    token: str | None = _f(None, "token", "token for /v1/tail instead of auth.token", live=True)
    allowed_origins: tuple[str, ...] = _f((), "strings", "browser Origins allowed besides the sidecar's own", live=True)
    ping_interval: float = _f(20.0, "duration", "WebSocket keepalive: ping this often, close if no pong within as long")


@dataclass(frozen=True)
class LogConfig:
    level: str = _f("info", "choice", "debug, info, warning or error", choices=("debug", "info", "warning", "error"), live=True)


@dataclass(frozen=True)
class WebConfig:
    enabled: bool = _f(True, "bool", "serve the built-in live page at GET /", live=True)
    max_rows: int = _f(1000, "positive_int", "events the page's list keeps at most (a page may ask for fewer with ?rows=)", live=True)


# -- OpenTelemetry (OTLP/HTTP) intake and the price table: one block, see sidecar/ingest/otlp.py ----------
@dataclass(frozen=True)
class OtlpConfig:
    enabled: bool = _f(True, "bool", "accept OTLP/HTTP on /v1/traces (GenAI spans become events), /v1/metrics and /v1/logs")
    keep_content: bool = _f(False, "bool", "keep prompts, completions and tool arguments/results in the event payload")
    agent_attribute: str | None = _f("service.name", "optional_str", "resource attribute naming the agent when neither the span nor an ancestor does")
    workflow_attribute: str | None = _f(None, "optional_str", "resource attribute naming the workflow when neither the span nor an ancestor does")
    hold: float = _f(30.0, "duration", "a span whose ancestors have not arrived waits this long for them")
    max_held: int = _f(10_000, "positive_int", "spans waiting for their ancestors at most; past it the oldest go out with what is known")
    max_tracked_spans: int = _f(100_000, "positive_int", "recent spans remembered (parent, agent, workflow) to resolve later children")
    max_attributes: int = _f(1024, "positive_int", "a span with more attributes than this is refused")
    max_payload_bytes: int = _f(8 * 1024, "size", "span attributes carried as the event payload, beyond it the rest are left out")


def _parse_prices(value: Any) -> dict[str, dict[str, float]]:
    """`{model: {input_per_mtok: 2.5, output_per_mtok: 10}}`, US dollars per million tokens."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError("must be a mapping of model name to {input_per_mtok, output_per_mtok}")
    out = {}
    for model, prices in value.items():
        if not isinstance(model, str) or not isinstance(prices, dict) or set(prices) != {"input_per_mtok", "output_per_mtok"}:
            raise ValueError(f"{model}: must be {{input_per_mtok: N, output_per_mtok: N}} (US dollars per million tokens)")
        for key, n in prices.items():
            if isinstance(n, bool) or not isinstance(n, (int, float)) or not 0 <= n < 1e9:
                raise ValueError(f"{model}.{key}: must be a number >= 0, not {n!r}")
        out[model] = {k: float(n) for k, n in prices.items()}
    return out


@dataclass(frozen=True)
class PricingConfig:
    enabled: bool = _f(True, "bool", "fill in cost_usd from model and tokens when an event has none (genai-prices' table)")
    models: dict[str, dict[str, float]] = _f({}, "prices", "per-model prices that win over the table: {model: {input_per_mtok, output_per_mtok}}")
# -- end of the OTLP / pricing block ------------------------------------------------------------------------


@dataclass(frozen=True)
class InsightsConfig:
    """Thresholds of /v1/insights (README, "Insights"): each rule also needs its minimum sample."""

    window: float = _f(900.0, "duration", "default window of /v1/insights (the recent period judged)")
    baseline: float = _f(3600.0, "duration", "default baseline span, ending now: the window is compared with the part of it before the window")
    retention: float = _f(3600.0, "duration", "longest baseline a query may ask for (the insights store keeps this much event time)")
    bucket: float = _f(10.0, "duration", "granularity of the insights store: window edges are exact to this")
    min_samples: int = _f(50, "positive_int", "duration samples (or LLM calls) a subject needs in each period before slow, latency_regression or token_bloat judge it")
    min_events: int = _f(50, "positive_int", "events a subject needs before error_hotspot, error_regression or rate_limited judge it")
    min_errors: int = _f(20, "positive_int", "errors (or rate-limit errors) a subject needs in the window before an error finding fires")
    min_runs: int = _f(20, "positive_int", "ended runs a workflow needs (in each period) before cost_regression, throughput_drop or stuck judge it")
    slow_ratio: float = _f(4.0, "ratio", "slow: p95 at least this many times the peers' p95 (same event type)")
    slow_min_ms: float = _f(250.0, "ratio", "slow and latency_regression: the p95 must also exceed the reference by this many ms")
    tail_share: float = _f(
        0.15, "ratio", "slow and latency_regression: also this share of the subject's samples above the reference p95 (normally 5%): a few timeouts move a p95 but not the body"
    )
    latency_ratio: float = _f(2.0, "ratio", "latency_regression: window p95 at least this many times the baseline p95")
    error_rate: float = _f(0.2, "ratio", "error_hotspot: error rate at least this (0.2 = 20% of the subject's events)")
    error_ratio: float = _f(2.0, "ratio", "error_regression: error rate at least this many times the baseline's ...")
    error_rise: float = _f(0.05, "ratio", "error_regression: ... and at least this much higher (0.05 = 5 points)")
    rate_limit_share: float = _f(0.15, "ratio", "rate_limited: rate-limit errors at least this share of a model's LLM calls")
    rate_limit_errors: tuple[str, ...] = _f(
        ("rate_limited", "rate_limit", "rate_limit_exceeded", "too_many_requests"), "strings", "error kinds that mean rate limiting"
    )
    cost_share: float = _f(0.5, "ratio", "cost_hotspot: an agent or model with at least this share of the window's spend (info)")
    cost_share_rise: float = _f(0.2, "ratio", "cost_hotspot is a warning when the share also rose this much against the baseline (0.2 = 20 points)")
    cost_ratio: float = _f(1.5, "ratio", "cost_regression: cost per ended run at least this many times the baseline's")
    token_ratio: float = _f(1.5, "ratio", "token_bloat: input tokens per LLM call at least this many times the baseline's")
    retry_failures: int = _f(6, "positive_int", "retry_storm: failed events of one invocation (or run) in the window that make it a storm")
    retry_storms: int = _f(2, "positive_int", "retry_storm: storms an agent needs in the window before the finding fires")
    stuck_factor: float = _f(3.0, "ratio", "stuck: a run or invocation open this many times its usual (p95) duration is overdue")
    stuck_share: float = _f(0.1, "ratio", "stuck: overdue ones at least this share of the runs (invocations) that ended in window and baseline")
    stuck_min: int = _f(5, "positive_int", "stuck: overdue runs (invocations) needed before the finding fires")
    abandon_min: int = _f(5, "positive_int", "stuck: runs of a workflow abandoned (no end within lifecycle.abandon_after) in the window before abandonment is judged")
    abandon_ratio: float = _f(2.0, "ratio", "stuck: abandoned share of a workflow's runs (abandoned + ended) at least this many times the baseline's ...")
    abandon_rise: float = _f(0.05, "ratio", "stuck: ... and at least this much higher (0.05 = 5 points)")
    throughput_ratio: float = _f(0.5, "ratio", "throughput_drop: completed runs per minute at most this share of the baseline's")
    max_active: int = _f(100_000, "positive_int", "open runs and invocations tracked for stuck (beyond: the oldest are dropped)")
    max_subjects: int = _f(10_000, "positive_int", "subjects (type, agent, workflow, model) per bucket; beyond, new ones are counted but not judged")
    cache: float = _f(10.0, "duration", "agent_insights is recomputed at a scrape at most this often")


@dataclass(frozen=True)
class Config:
    listen: ListenConfig = field(default_factory=ListenConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    ingest: IngestConfig = field(default_factory=IngestConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    lifecycle: LifecycleConfig = field(default_factory=LifecycleConfig)
    windows: WindowsConfig = field(default_factory=WindowsConfig)
    tail: TailConfig = field(default_factory=TailConfig)
    log: LogConfig = field(default_factory=LogConfig)
    web: WebConfig = field(default_factory=WebConfig)
    insights: InsightsConfig = field(default_factory=InsightsConfig)
    shutdown_grace: float = _f(10.0, "duration", "how long shutdown may take", live=True)
    otlp: OtlpConfig = field(default_factory=OtlpConfig)
    pricing: PricingConfig = field(default_factory=PricingConfig)

    def replace(self, **changes: Any) -> Config:
        """A copy with dotted keys changed, e.g. replace(**{"listen.http": "127.0.0.1:0"})."""
        data = dataclasses.asdict(self)
        for dotted, value in changes.items():
            node = data
            *parents, leaf = dotted.split(".")
            for p in parents:
                node = node[p]
            node[leaf] = value
        config: Config = _build(Config, data, "")
        return config


MAX_DURATION = 366 * 86400.0  # longer is a typo, and infinity would make every timestamp acceptable
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
_SIZES = {"": 1, "b": 1, "kb": 1000, "kib": 1024, "mb": 1000**2, "mib": 1024**2, "gb": 1000**3, "gib": 1024**3}


def parse_duration(value: Any) -> float:
    """'250ms', '5m', '1h', or a number of seconds."""
    if isinstance(value, bool):
        raise ValueError("must be a duration like 30s, 5m or 1h")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*", str(value))
        if not m:
            raise ValueError(f"must be a duration like 30s, 5m or 1h, not {value!r}")
        seconds = float(m[1]) * _UNITS[m[2]]
    if not math.isfinite(seconds):
        raise ValueError(f"must be a finite duration, not {value!r}")
    if seconds <= 0:
        raise ValueError("must be greater than zero")
    if seconds > MAX_DURATION:
        raise ValueError(f"must be at most 366d, not {value!r}")
    return seconds


def parse_size(value: Any) -> int:
    """'64KiB', '10MiB', or a number of bytes."""
    if isinstance(value, bool):
        raise ValueError("must be a size like 64KiB or 10MiB")
    if isinstance(value, int):
        size = value
    else:
        m = re.fullmatch(r"\s*(\d+)\s*([a-zA-Z]*)\s*", str(value))
        if not m or m[2].lower() not in _SIZES:
            raise ValueError(f"must be a size like 64KiB or 10MiB, not {value!r}")
        size = int(m[1]) * _SIZES[m[2].lower()]
    if size <= 0:
        raise ValueError("must be greater than zero")
    return size


def format_duration(seconds: float) -> str:
    """The inverse of parse_duration for whole units: 300 -> '5m'."""
    for unit in ("d", "h", "m", "s"):
        n = seconds / _UNITS[unit]
        if n >= 1 and n == int(n):
            return f"{int(n)}{unit}"
    return f"{seconds * 1000:g}ms"


def format_size(size: int) -> str:
    """The inverse of parse_size for whole binary units: 65536 -> '64KiB'."""
    for unit in ("GiB", "MiB", "KiB"):
        n, r = divmod(size, _SIZES[unit.lower()])
        if n and not r:
            return f"{n}{unit}"
    return str(size)


def _parse_hostport(value: Any) -> str:
    if value in (None, ""):
        return ""
    host, sep, port = str(value).rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"must be HOST:PORT, e.g. 127.0.0.1:8765, not {value!r}")
    return str(value)


def _parse_path(value: Any) -> str:
    if value in (None, ""):
        return ""
    if not isinstance(value, str) or not os.path.isabs(value):
        raise ValueError("must be an absolute path")
    return value


def _parse_mode(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        mode = value  # YAML 1.1 reads 0660 as octal already
    elif isinstance(value, str) and re.fullmatch(r"0?o?[0-7]{3,4}", value):
        mode = int(value.replace("o", ""), 8)
    else:
        raise ValueError(f"must be an octal mode like 0660, not {value!r}")
    if not 0 <= mode <= 0o777:
        raise ValueError("must be between 0000 and 0777")
    return mode


def _parse_positive_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"must be a positive integer, not {value!r}")
    return value


def _parse_ratio(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
        raise ValueError(f"must be a positive number, not {value!r}")
    return float(value)


def _parse_bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"must be true or false, not {value!r}")
    return value


_TOKEN = re.compile(r"[\x21-\x7e]+")  # what an Authorization header can carry, byte for byte


def _parse_token(value: Any) -> str | None:
    # An empty token used to mean "no authentication" without a word: off is spelled null.
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError("must be a string")
    if not value.strip():
        raise ValueError("is empty, which would turn authentication off: set a token, or null (or remove the key) for none")
    if not _TOKEN.fullmatch(value):
        raise ValueError("must be printable ASCII without spaces (an HTTP header cannot carry anything else)")
    return value


def _parse_optional_str(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ValueError("must be a string")
    return value


def _parse_strings(value: Any) -> tuple[str, ...]:
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise ValueError("must be a list of strings")
    return tuple(value)


def _parse_durations(value: Any) -> tuple[float, ...]:
    if not isinstance(value, (list, tuple)) or not value:
        raise ValueError("must be a non-empty list of durations")
    out = tuple(sorted(set(parse_duration(v) for v in value)))
    return out


def _parse_buckets(value: Any) -> tuple[float, ...]:
    if not isinstance(value, (list, tuple)) or not value:
        raise ValueError("must be a non-empty list of numbers (seconds)")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v < math.inf for v in value):
        raise ValueError("bucket bounds must be positive numbers of seconds")
    if list(value) != sorted(set(value)):
        raise ValueError("bucket bounds must be strictly increasing")
    return tuple(float(v) for v in value)


_PARSERS = {
    "hostport": _parse_hostport,
    "path": _parse_path,
    "mode": _parse_mode,
    "token": _parse_token,
    "optional_str": _parse_optional_str,
    "size": parse_size,
    "duration": parse_duration,
    "positive_int": _parse_positive_int,
    "bool": _parse_bool,
    "ratio": _parse_ratio,
    "strings": _parse_strings,
    "durations": _parse_durations,
    "buckets": _parse_buckets,
    "prices": _parse_prices,
}


def _build(cls: type, data: Any, path: str, problems: list[str] | None = None) -> Any:
    own = problems is None
    if problems is None:
        problems = []
    if data is None:
        data = {}
    if not isinstance(data, dict):
        problems.append(f"{path or '<top>'}: must be a mapping")
        data = {}
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in fields:
            where = f"{path}.{key}" if path else str(key)
            problems.append(f"{where}: unknown key (expected one of: {', '.join(fields)})")
    values = {}
    for name, f in fields.items():
        if name not in data:
            continue
        where = f"{path}.{name}" if path else name
        kind = f.metadata.get("kind")
        if kind is None:  # a nested section
            section = f.default_factory
            assert isinstance(section, type)  # every nested section is a dataclass type
            values[name] = _build(section, data[name], where, problems)
            continue
        try:
            if kind == "choice":
                if data[name] not in f.metadata["choices"]:
                    raise ValueError(f"must be one of {', '.join(f.metadata['choices'])}")
                values[name] = data[name]
            else:
                values[name] = _PARSERS[kind](data[name])
        except ValueError as exc:
            problems.append(f"{where}: {exc}")
    if own and problems:
        raise ConfigError(problems)
    return cls(**values)


def _check(config: Config) -> list[str]:
    problems = []
    if not config.listen.http and not config.listen.unix:
        problems.append("listen: at least one of listen.http and listen.unix must be set")
    for key in ("prometheus_by", "index_by"):
        for name in getattr(config.windows, key):
            if name not in ("agent", "workflow", "type", "model", "tool"):
                problems.append(f"windows.{key}: unknown field {name!r} (expected agent, workflow, type, model or tool)")
    ins = config.insights
    if not ins.bucket <= ins.window < ins.baseline <= ins.retention:
        problems.append("insights: must hold bucket <= window < baseline <= retention")
    if config.ingest.max_event_bytes > config.ingest.max_body_bytes:
        problems.append("ingest.max_event_bytes: must not exceed ingest.max_body_bytes")
    if config.listen.http and config.tail.max_clients >= config.ingest.max_http_connections:
        # Tail clients are HTTP connections: at the HTTP cap they would get 503 before the tail's own 1013.
        problems.append(
            f"tail.max_clients: {config.tail.max_clients} must be below ingest.max_http_connections "
            f"({config.ingest.max_http_connections}), which also counts tail WebSockets"
        )
    return problems


def config_from_dict(data: Any) -> Config:
    """Validate a parsed YAML document; raise ConfigError listing every problem."""
    problems: list[str] = []
    config: Config = _build(Config, data, "", problems)
    problems += _check(config) if not problems else []
    if problems:
        raise ConfigError(problems)
    return config


def load_config(path: str | None) -> Config:
    """Load and validate a YAML file; None gives the embedded default config."""
    if path is None:
        return Config()
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror}"]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})"]) from None
    try:
        data, problems = parse_yaml(text)
    except yaml.YAMLError as exc:
        raise ConfigError([f"{path}: not valid YAML: {exc}"]) from None
    try:
        config = config_from_dict(data)
    except ConfigError as exc:
        problems += exc.problems
    if problems:
        raise ConfigError(problems)
    return config


MAX_YAML_NODES = 10_000  # far more than any config; an alias bomb expands to billions


def parse_yaml(text: str) -> tuple[Any, list[str]]:
    """yaml.safe_load, plus the problems it would silently accept: a duplicate key (the last
    one won, so a second `token:` could turn authentication off). A document whose aliases
    expand beyond MAX_YAML_NODES values is refused before it is built (validating one
    exhausted memory)."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, []
        problems = _yaml_node_problems(node)
        if problems and problems[-1].endswith(_TOO_MANY):
            raise ConfigError(problems)
        return loader.construct_document(node), problems
    finally:
        loader.dispose()


_TOO_MANY = "values once YAML aliases are expanded; write the values out"


def _yaml_node_problems(root: yaml.Node) -> list[str]:
    problems: list[str] = []
    stack: list[tuple[yaml.Node, str]] = [(root, "")]
    visited = 0
    while stack:
        node, path = stack.pop()
        visited += 1
        if visited > MAX_YAML_NODES:
            where = path.partition("[")[0] or "<top>"  # the key the aliases hang from, not a list index
            return problems + [f"{where}: more than {MAX_YAML_NODES} {_TOO_MANY}"]
        if isinstance(node, yaml.MappingNode):
            seen: set[str] = set()
            for key, value in node.value:
                name = str(key.value) if isinstance(key, yaml.ScalarNode) else "?"
                where = f"{path}.{name}" if path else name
                if name in seen:
                    problems.append(f"{where}: duplicate key (line {key.start_mark.line + 1}); YAML would silently keep only the last")
                seen.add(name)
                stack.append((value, where))
        elif isinstance(node, yaml.SequenceNode):
            stack += [(item, f"{path}[{i}]") for i, item in enumerate(node.value)]
    return problems


def leaves(config: Any, prefix: str = "") -> Iterator[tuple[str, Any, Mapping[str, Any]]]:
    """Every key of a config (or of one section) as (YAML path, value, field metadata), in file order."""
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        path = f"{prefix}.{f.name}" if prefix else f.name
        if dataclasses.is_dataclass(value):
            yield from leaves(value, path)
        else:
            yield path, value, f.metadata


def describe_defaults() -> str:
    """The default config as commented YAML (what `config.example.yaml` documents)."""
    lines = []

    def emit(cls: type, obj: Any, indent: str) -> None:
        for f in dataclasses.fields(cls):
            value = getattr(obj, f.name)
            if dataclasses.is_dataclass(value):
                lines.append(f"{indent}{f.name}:")
                emit(type(value), value, indent + "  ")
                continue
            kind = f.metadata["kind"]
            if kind == "duration":
                shown = format_duration(value)
            elif kind == "durations":
                shown = "[" + ", ".join(format_duration(v) for v in value) + "]"
            elif kind == "size":
                shown = format_size(value)
            elif kind == "mode":
                shown = f'"{value:04o}"'
            elif value is None:
                shown = "null"
            elif isinstance(value, tuple):
                shown = "[" + ", ".join(str(v) for v in value) + "]"
            elif isinstance(value, bool):
                shown = str(value).lower()
            elif isinstance(value, str):
                shown = f'"{value}"'
            else:
                shown = str(value)
            lines.append(f"{indent}# {f.metadata['doc']}")
            lines.append(f"{indent}{f.name}: {shown}")

    emit(Config, Config(), "")
    return "\n".join(lines) + "\n"

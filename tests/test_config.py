import os

import pytest
import yaml

from sidecar.config import Config, config_from_dict, describe_defaults, format_duration, load_config, parse_duration, parse_size
from sidecar.exceptions import ConfigError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def problems(data) -> list[str]:
    with pytest.raises(ConfigError) as exc:
        config_from_dict(data)
    return exc.value.problems


def test_no_file_gives_the_embedded_defaults():
    c = load_config(None)
    assert c == Config()
    assert (c.listen.http, c.listen.unix, c.listen.unix_mode) == ("127.0.0.1:8765", "/tmp/agent-sidecar.sock", 0o660)
    assert (c.ingest.max_event_bytes, c.ingest.max_body_bytes, c.ingest.max_clock_skew) == (65536, 10 * 1024 * 1024, 300)
    assert (c.metrics.max_series_per_metric, c.metrics.series_ttl, c.lifecycle.abandon_after) == (10000, 3600, 3600)
    assert c.shutdown_grace == 10 and c.auth.token is None


def test_example_config_is_valid_and_documents_every_default():
    example = load_config(os.path.join(REPO, "config.example.yaml"))
    assert example == Config()
    with open(os.path.join(REPO, "config.example.yaml")) as f:
        text = f.read()
    for line in describe_defaults().splitlines():
        if not line.lstrip().startswith("#"):
            key = line.split(":")[0].strip()
            assert f"{key}:" in text, key


def test_described_defaults_round_trip():
    assert config_from_dict(yaml.safe_load(describe_defaults())) == Config()


def test_values_are_parsed_from_friendly_units():
    c = config_from_dict(
        {
            "listen": {"http": "0.0.0.0:9000", "unix": "", "unix_mode": "0600"},
            "auth": {"token": "s3cret"},
            "ingest": {"max_event_bytes": "1KiB", "max_body_bytes": "2MB", "max_clock_skew": "90s"},
            "metrics": {"series_ttl": "2h", "duration_buckets": [0.1, 1, 10], "exemplars": False},
            "lifecycle": {"abandon_after": "250ms"},
            "windows": {"durations": ["1h", "1m"]},
            "log": {"level": "debug"},
            "shutdown_grace": 3,
        }
    )
    assert (c.listen.http, c.listen.unix, c.listen.unix_mode, c.auth.token) == ("0.0.0.0:9000", "", 0o600, "s3cret")
    assert (c.ingest.max_event_bytes, c.ingest.max_body_bytes, c.ingest.max_clock_skew) == (1024, 2_000_000, 90)
    assert (c.metrics.series_ttl, c.metrics.duration_buckets, c.metrics.exemplars) == (7200, (0.1, 1.0, 10.0), False)
    assert c.lifecycle.abandon_after == 0.25 and c.windows.durations == (60, 3600) and c.shutdown_grace == 3


def test_every_problem_is_listed_with_its_yaml_path():
    found = problems(
        {
            "listen": {"unix": "relative.sock", "unix_mode": "rwx", "http": "8765", "extra": 1},
            "ingest": {"max_event_bytes": "lots", "queue_size": 0, "max_clock_skew": "-5s"},
            "metrics": {"duration_buckets": [1, 0.5], "exemplars": "yes"},
            "log": {"level": "loud"},
            "shutdown_grace": "soon",
            "mystery": {},
        }
    )
    expected = [
        "mystery: unknown key",
        "listen.extra: unknown key",
        "listen.http: must be HOST:PORT",
        "listen.unix: must be an absolute path",
        "listen.unix_mode: must be an octal mode",
        "ingest.max_event_bytes: must be a size",
        "ingest.max_clock_skew: must be a duration",
        "ingest.queue_size: must be a positive integer",
        "metrics.duration_buckets: bucket bounds must be strictly increasing",
        "metrics.exemplars: must be true or false",
        "log.level: must be one of",
        "shutdown_grace: must be a duration",
    ]
    for prefix in expected:
        assert any(p.startswith(prefix) for p in found), (prefix, found)
    assert len(found) == len(expected)


@pytest.mark.parametrize(
    "data, message",
    [
        ([1, 2], "<top>: must be a mapping"),
        ({"listen": "here"}, "listen: must be a mapping"),
        ({"listen": {"http": "", "unix": ""}}, "listen: at least one"),
        ({"ingest": {"max_event_bytes": "2MiB", "max_body_bytes": "1MiB"}}, "ingest.max_event_bytes: must not exceed"),
        ({"listen": {"unix_mode": 0o1777}}, "listen.unix_mode: must be between"),
        ({"windows": {"durations": []}}, "windows.durations: must be a non-empty list"),
        ({"tail": {"allowed_origins": "*"}}, "tail.allowed_origins: must be a list of strings"),
        ({"auth": {"token": 123}}, "auth.token: must be a string"),
        ({"metrics": {"duration_buckets": "fast"}}, "metrics.duration_buckets: must be a non-empty list"),
        ({"metrics": {"duration_buckets": [0, 1]}}, "metrics.duration_buckets: bucket bounds must be positive"),
        ({"listen": {"http": "localhost:99999"}}, "listen.http: must be HOST:PORT"),
    ],
)
def test_bad_values(data, message):
    assert any(p.startswith(message) for p in problems(data)), problems(data)


def test_yaml_errors_and_missing_files_are_config_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("listen: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(str(bad))
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(str(tmp_path / "missing.yaml"))


def test_empty_file_is_the_default_config(tmp_path):
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert load_config(str(empty)) == Config()


@pytest.mark.parametrize("text, seconds", [("250ms", 0.25), ("30s", 30), ("5m", 300), ("1h", 3600), ("1d", 86400), (7, 7.0), ("1.5m", 90)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["0s", "5 minutes", True, "", -1])
def test_bad_durations(bad):
    with pytest.raises(ValueError):
        parse_duration(bad)


@pytest.mark.parametrize("text, size", [("64KiB", 65536), ("10MiB", 10485760), ("1GB", 10**9), (512, 512), ("100", 100)])
def test_sizes(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("bad", ["0", "12 parsecs", True, "-1KiB"])
def test_bad_sizes(bad):
    with pytest.raises(ValueError):
        parse_size(bad)


def test_format_duration_inverts_parse():
    assert [format_duration(s) for s in (60, 300, 3600, 86400, 1.5, 0.25)] == ["1m", "5m", "1h", "1d", "1500ms", "250ms"]


def test_replace_validates_the_change():
    assert Config().replace(**{"listen.http": "127.0.0.1:0"}).listen.http == "127.0.0.1:0"
    with pytest.raises(ConfigError, match="listen.unix: must be an absolute path"):
        Config().replace(**{"listen.unix": "x.sock"})

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
        ({"tail": {"max_clients": 200}, "ingest": {"max_http_connections": 200}}, "tail.max_clients: 200 must be below"),
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


@pytest.mark.parametrize("bad", ["0s", "5 minutes", True, "", -1, float("inf"), float("nan"), 1e300])
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


# Issue 14, defect 9: config that silently weakened the sidecar is refused, with its YAML path.
@pytest.mark.parametrize(
    "text, message",
    [
        ('auth:\n  token: ""\n', "auth.token: is empty, which would turn authentication off"),
        ("auth:\n  token: '   '\n", "auth.token: is empty"),
        ('tail:\n  token: ""\n', "tail.token: is empty"),
        ("auth:\n  token: s3cret\nauth:\n  token: null\n", "auth: duplicate key (line 3)"),
        ("auth:\n  token: s3cret\n  token: other\n", "auth.token: duplicate key (line 3)"),
        ("auth:\n  token: pässwörd\n", "auth.token: must be printable ASCII"),
        ("auth:\n  token: two words\n", "auth.token: must be printable ASCII"),
        ("ingest:\n  max_clock_skew: .inf\n", "ingest.max_clock_skew: must be a finite duration"),
        ("ingest:\n  header_timeout: .nan\n", "ingest.header_timeout: must be a finite duration"),
        ("shutdown_grace: -.inf\n", "shutdown_grace: must be a finite duration"),
        ("lifecycle:\n  abandon_after: 1.0e+300\n", "lifecycle.abandon_after: must be at most 366d"),
        ("windows:\n  durations: [1m, .inf]\n", "windows.durations: must be a finite duration"),
        ("metrics:\n  duration_buckets: [1, .inf]\n", "metrics.duration_buckets: bucket bounds must be positive"),
    ],
)
def test_config_that_would_silently_weaken_the_sidecar_is_refused_with_its_path(tmp_path, text, message):
    path = tmp_path / "c.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as exc:
        load_config(str(path))
    assert any(p.startswith(message) for p in exc.value.problems), exc.value.problems


def alias_bomb(levels: int = 9) -> str:
    """The billion laughs: 9**levels strings from a few hundred bytes of YAML."""
    lines = ['l0: &l0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, levels):
        lines.append(f"l{i}: &l{i} [" + ",".join([f"*l{i - 1}"] * 9) + "]")
    return "\n".join(lines) + f"\nlisten:\n  http: *l{levels - 1}\n"


def test_an_alias_bomb_is_refused_before_it_is_expanded(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(alias_bomb())
    with pytest.raises(ConfigError) as exc:
        load_config(str(path))
    assert any("more than 10000 values once YAML aliases are expanded" in p for p in exc.value.problems)


def test_duplicate_keys_are_listed_with_every_other_problem(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text('auth:\n  token: s3cret\n  token: ""\ningest:\n  max_clock_skew: .inf\n')
    with pytest.raises(ConfigError) as exc:
        load_config(str(path))
    found = exc.value.problems
    for prefix in ("auth.token: duplicate key", "auth.token: is empty", "ingest.max_clock_skew: must be a finite duration"):
        assert any(p.startswith(prefix) for p in found), (prefix, found)


def test_small_aliases_and_a_null_token_stay_valid(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("auth:\n  token: null\nwindows:\n  durations: &d [1m, 5m]\n  index_by: []\n")
    assert load_config(str(path)).windows.durations == (60.0, 300.0)

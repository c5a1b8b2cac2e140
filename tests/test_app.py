import subprocess

import httpx
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_text

from sidecar.testing import event, ndjson, running_sidecar

OPENMETRICS = "application/openmetrics-text; version=1.0.0"


def samples(text, parser=parse_text):
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in parser(text) for s in f.samples}


def test_healthz_and_readyz_name_every_listener(sidecar):
    assert httpx.get(sidecar.url + "/healthz").text == "ok\n"
    r = httpx.get(sidecar.url + "/readyz")
    assert r.status_code == 200 and r.json() == {"ready": True, "listeners": [sidecar.url, f"unix:{sidecar.unix}"]}


def test_scrape_has_exact_counts_and_passes_promtool(sidecar):
    sidecar.send_unix(ndjson(*[event(agent="planner", workflow="wf", duration_ms=200, input_tokens=10, output_tokens=2, cost_usd=0.5, model="m")] * 7))
    httpx.post(sidecar.url + "/v1/events", json=[event(type="agent.failed", agent="coder", error="timeout"), {"nope": 1}])
    sidecar.wait_processed(8)
    text = httpx.get(sidecar.url + "/metrics").text
    got = samples(text)
    assert got[("agent_events_total", (("agent", "planner"), ("severity", "info"), ("type", "llm.call"), ("workflow", "wf")))] == 7
    assert got[("agent_tokens_total", (("agent", "planner"), ("model", "m"), ("token_type", "input")))] == 70
    assert got[("agent_cost_usd_total", (("agent", "planner"), ("model", "m")))] == 3.5
    assert got[("agent_errors_total", (("agent", "coder"), ("error", "timeout"), ("workflow", "")))] == 1
    assert got[("sidecar_events_received_total", (("transport", "unix"),))] == 7
    assert got[("sidecar_events_received_total", (("transport", "http"),))] == 2
    assert got[("sidecar_events_rejected_total", (("reason", "missing_type"), ("transport", "http")))] == 1
    assert got[("sidecar_events_processed_total", ())] == 8
    assert got[("sidecar_build_info", (("version", __import__("sidecar").__version__),))] == 1
    assert ("process_resident_memory_bytes", ()) in got
    check = subprocess.run(["promtool", "check", "metrics"], input=text.encode(), capture_output=True)
    assert check.returncode == 0, check.stdout.decode() + check.stderr.decode()


def test_openmetrics_is_served_when_asked_and_carries_exemplars(sidecar):
    sidecar.send_unix(ndjson(event(agent="a", duration_ms=700, trace_id="4bf92f3577b34da6a3ce929d0e0e4736")))
    sidecar.wait_processed(1)
    r = httpx.get(sidecar.url + "/metrics", headers={"accept": OPENMETRICS})
    assert r.headers["content-type"].startswith("application/openmetrics-text")
    assert r.text.endswith("# EOF\n")
    exemplars = [s.exemplar for f in parse_openmetrics(r.text) for s in f.samples if s.exemplar]
    assert [e.labels for e in exemplars] == [{"trace_id": "4bf92f3577b34da6a3ce929d0e0e4736"}]
    plain = httpx.get(sidecar.url + "/metrics")
    assert plain.headers["content-type"].startswith("text/plain") and "trace_id" not in plain.text


def test_conservation_holds_across_transports(sidecar):
    sidecar.send_unix(ndjson(event(), event()) + b"junk\n" + b"y" * 70_000 + b"\n")
    httpx.post(sidecar.url + "/v1/events", json=[event(), 5, {"type": "x", "timestamp": 9e12}])
    sidecar.wait_processed(3)
    for transport, expect in (("unix", (4, 2, 2)), ("http", (3, 1, 2))):
        received = sidecar.value("sidecar_events_received_total", {"transport": transport})
        accepted = sidecar.value("sidecar_events_accepted_total", {"transport": transport})
        rejected = sum(
            sidecar.value("sidecar_events_rejected_total", {"transport": transport, "reason": r}) or 0
            for r in ("invalid_json", "too_large", "not_object", "future_timestamp")
        )
        assert (received, accepted, rejected) == expect


def test_scrape_duration_is_recorded(sidecar):
    httpx.get(sidecar.url + "/metrics")
    assert sidecar.value("sidecar_scrape_duration_seconds_count") >= 1


def test_metrics_need_the_token_when_one_is_set_but_health_checks_do_not():
    with running_sidecar(**{"auth.token": "s3cret"}) as s:
        assert httpx.get(s.url + "/metrics").status_code == 401
        assert httpx.get(s.url + "/metrics", headers={"authorization": "Bearer s3cret"}).status_code == 200
        assert httpx.get(s.url + "/healthz").status_code == 200
        assert httpx.get(s.url + "/readyz").status_code == 200

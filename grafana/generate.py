#!/usr/bin/env python3
"""Generate grafana/dashboards/*.json (stdlib only).

    python grafana/generate.py          # rewrite the dashboards
    python grafana/generate.py --check  # exit 1 if a committed dashboard is out of date

Each panel is one call below, so the dashboards are reviewable as code and consistent
by construction (datasource, units, legend, layout); the JSON is committed so Grafana
provisioning needs nothing but the files. Expensive queries read the recording rules in
prometheus/rules/agent-sidecar-recording.yml. Histograms are classic (`_bucket` + `le`):
Debian's Prometheus 2.42 reads native histograms only over protobuf.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent / "dashboards"
SCHEMA_VERSION = 39  # Grafana 10.4 / 11.x
DS = {"type": "prometheus", "uid": "${datasource}"}
I = 'instance=~"$instance"'  # every selector carries it, so a fleet of sidecars works
RATE = "$__rate_interval"

# Units (Grafana unit ids; "suffix:" is Grafana's custom-unit syntax).
EV_S, TOK_S, USD, SECONDS, RATIO, COUNT, BYTES = "suffix: ev/s", "suffix: tok/s", "currencyUSD", "s", "percentunit", "short", "bytes"


# -- building blocks ---------------------------------------------------------------


def q(expr: str, legend: str = "", *, instant: bool = False, exemplar: bool = False, fmt: str | None = None) -> dict:
    """One Prometheus query (a panel target)."""
    target = {"datasource": DS, "expr": expr, "legendFormat": legend or "__auto", "range": not instant, "instant": instant}
    if exemplar:
        target["exemplar"] = True
    if fmt:
        target["format"] = fmt
    return target


class Board:
    """Lays panels out left to right on Grafana's 24-column grid and numbers them."""

    def __init__(self) -> None:
        self.panels: list[dict] = []
        self.x = self.y = self.row_h = 0

    def row(self, title: str) -> None:
        self._newline()
        self.panels.append({"id": len(self.panels) + 1, "type": "row", "title": title, "collapsed": False,
                            "gridPos": {"x": 0, "y": self.y, "w": 24, "h": 1}, "panels": []})
        self.y += 1

    def _newline(self) -> None:
        self.y += self.row_h
        self.x = self.row_h = 0

    def add(self, kind: str, title: str, unit: str, targets: list[dict], *, w: int = 12, h: int = 8,
            description: str = "", options: dict | None = None, custom: dict | None = None, **extra) -> None:
        if self.x + w > 24:
            self._newline()
        for i, t in enumerate(targets):
            t["refId"] = chr(ord("A") + i)
        self.panels.append({
            "id": len(self.panels) + 1,
            "type": kind,
            "title": title,
            "description": description,
            "datasource": DS,
            "gridPos": {"x": self.x, "y": self.y, "w": w, "h": h},
            "fieldConfig": {"defaults": {"unit": unit, **({"custom": custom} if custom else {})}, "overrides": []},
            "options": options or {},
            "targets": targets,
            **extra,
        })
        self.x += w
        self.row_h = max(self.row_h, h)

    def timeseries(self, title: str, unit: str, *targets: dict, w: int = 12, h: int = 8, description: str = "", stack: bool = False) -> None:
        custom = {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 20 if stack else 10, "showPoints": "never",
                  "spanNulls": True, "stacking": {"mode": "normal" if stack else "none", "group": "A"}}
        options = {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                   "tooltip": {"mode": "multi", "sort": "desc"}}
        self.add("timeseries", title, unit, list(targets), w=w, h=h, description=description, options=options, custom=custom)

    def stat(self, title: str, unit: str, *targets: dict, w: int = 4, h: int = 4, description: str = "",
             text_mode: str = "auto", **extra) -> None:
        options = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}, "colorMode": "value",
                   "graphMode": "area", "justifyMode": "auto", "orientation": "auto", "textMode": text_mode}
        self.add("stat", title, unit, list(targets), w=w, h=h, description=description, options=options, **extra)

    def bars(self, title: str, unit: str, *targets: dict, w: int = 12, h: int = 8, description: str = "", **extra) -> None:
        options = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}, "orientation": "horizontal",
                   "displayMode": "gradient", "showUnfilled": True, "valueMode": "color"}
        self.add("bargauge", title, unit, list(targets), w=w, h=h, description=description, options=options, **extra)

    def heatmap(self, title: str, expr: str, *, w: int = 12, h: int = 8, description: str = "") -> None:
        """A classic-histogram heatmap (buckets by `le`), with exemplars."""
        options = {"calculate": False, "yAxis": {"axisPlacement": "left", "unit": SECONDS}, "cellGap": 1,
                   "color": {"mode": "scheme", "scheme": "Oranges", "steps": 64, "exponent": 0.5, "fill": "dark-orange"},
                   "exemplars": {"color": "rgba(255,0,255,0.7)"}, "rowsFrame": {"layout": "auto"},
                   "tooltip": {"show": True, "yHistogram": True}, "legend": {"show": True}, "filterValues": {"le": 1e-9}}
        self.add("heatmap", title, COUNT, [q(expr, "{{le}}", exemplar=True, fmt="heatmap")], w=w, h=h,
                 description=description, options=options)


def datasource_var() -> dict:
    return {"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus",
            "current": {"selected": False, "text": "Prometheus", "value": "prometheus"}, "hide": 0,
            "includeAll": False, "multi": False, "options": [], "refresh": 1, "regex": ""}


def query_var(name: str, label: str, query: str, *, all_: bool = True, multi: bool = True) -> dict:
    var = {"name": name, "label": label, "type": "query", "datasource": DS,
           "definition": query, "query": {"query": query, "refId": f"{name}-query"},
           "refresh": 2, "sort": 1, "hide": 0, "regex": "", "includeAll": all_, "multi": multi, "options": []}
    if all_:
        var["allValue"] = ".*"
        var["current"] = {"selected": True, "text": ["All"], "value": ["$__all"]}
    else:
        var["current"] = {}
    return var


def custom_var(name: str, label: str, values: list[str], default: str) -> dict:
    return {"name": name, "label": label, "type": "custom", "query": ",".join(values), "hide": 0,
            "includeAll": False, "multi": False,
            "current": {"selected": True, "text": default, "value": default},
            "options": [{"selected": v == default, "text": v, "value": v} for v in values]}


INSTANCE = query_var("instance", "Sidecar", "label_values(sidecar_build_info, instance)")


def dashboard(uid: str, title: str, description: str, board: Board, variables: list[dict]) -> dict:
    return {
        "id": None,
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["agent-sidecar"],
        "editable": True,
        "graphTooltip": 1,
        "fiscalYearStartMonth": 0,
        "liveNow": False,
        "refresh": "10s",
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "time": {"from": "now-1h", "to": "now"},
        "timepicker": {},
        "timezone": "browser",
        "weekStart": "",
        "annotations": {"list": [{
            "builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"}, "enable": True, "hide": True,
            "iconColor": "rgba(0, 211, 255, 1)", "name": "Annotations & Alerts", "type": "dashboard",
        }]},
        "links": [{"title": "agent-sidecar", "type": "dashboards", "tags": ["agent-sidecar"], "asDropdown": True,
                   "includeVars": True, "keepTime": True, "icon": "external link", "targetBlank": False, "tooltip": "", "url": ""}],
        "templating": {"list": [datasource_var(), *variables]},
        "panels": board.panels,
    }


# -- the dashboards ----------------------------------------------------------------


def overview() -> dict:
    b = Board()
    b.stat("Events / s", EV_S, q(f'sum(instance_type:agent_events:rate5m{{{I}}})'))
    b.stat("Error ratio", RATIO, q(f'sum(instance_agent:agent_errors:rate5m{{{I}}}) / sum(instance_agent:agent_events:rate5m{{{I}}})'),
           description="Events with success=false over all events (5m rate).")
    b.stat("Active workflows", COUNT, q(f'sum(agent_workflows_active{{{I}}})'))
    b.stat("Active invocations", COUNT, q(f'sum(agent_invocations_active{{{I}}})'))
    b.stat("Cost / hour", USD, q(f'sum(instance_agent_model:agent_cost_usd:rate5m{{{I}}}) * 3600'),
           description="Spend at the current (5m) rate, extrapolated to an hour.")
    b.stat("Cost today", USD, q(f'sum(increase(agent_cost_usd_total{{{I}}}[$__range]))', instant=True),
           timeFrom="now/d", hideTimeOverride=False, description="Spend since midnight (dashboard time zone).")

    b.row("Insights")
    b.bars("Active findings by sidecar", COUNT,
           q(f'sum by (instance, severity) (agent_insights{{{I}, severity!="info"}})', "{{instance}} ({{severity}})", instant=True),
           w=12, description="Warning and critical findings of each sidecar's /v1/insights (default window against its baseline), 0 when healthy; "
           "'Findings over time' names their kinds; "
           "`agent-sidecar insights --url` on that sidecar names the subject and what to try. AgentInsightCritical fires on a critical one held 10m.")
    b.timeseries("Findings over time", COUNT, q(f'sum by (kind, severity) (agent_insights{{{I}, severity!="info"}})', "{{kind}} ({{severity}})"),
                 w=12, stack=True, description="agent_insights summed over the selected sidecars: when findings appeared and cleared.")

    b.row("Traffic and errors")
    b.timeseries("Event rate by type", EV_S, q(f'sum by (type) (rate(agent_events_total{{{I}}}[{RATE}]))', "{{type}}"), stack=True)
    b.timeseries("Error ratio by agent", RATIO,
                 q(f'sum by (agent) (instance_agent:agent_errors:rate5m{{{I}, agent!=""}}) / sum by (agent) (instance_agent:agent_events:rate5m{{{I}, agent!=""}})', "{{agent}}"),
                 description="Share of each agent's events with success=false (5m rate). The AgentErrorRateHigh alert fires above 5%.")
    b.timeseries("Errors by kind", EV_S, q(f'sum by (agent, error) (rate(agent_errors_total{{{I}}}[{RATE}]))', "{{agent}}: {{error}}"))
    b.bars("Top agents by event rate", EV_S, q(f'topk(10, sum by (agent) (instance_agent:agent_events:rate5m{{{I}, agent!=""}}))', "{{agent}}", instant=True))

    b.row("Latency (histogram estimates)")
    for quantile in ("0.5", "0.95", "0.99"):
        p = f"p{float(quantile) * 100:g}"
        b.timeseries(f"{p} duration by agent", SECONDS,
                     q(f'histogram_quantile({quantile}, sum by (agent, le) (instance_agent_type_le:agent_event_duration_seconds_bucket:rate5m{{{I}, agent!="", type=~"$type"}}))',
                       f"{{{{agent}}}} {p}"),
                     w=8, description="Estimated from the classic histogram agent_event_duration_seconds (5m rate); $type narrows the event types.")

    b.row("Tokens and cost")
    b.timeseries("Tokens / s by model and direction", TOK_S,
                 q(f'sum by (model, token_type) (instance_agent_model_token_type:agent_tokens:rate5m{{{I}}})', "{{model}} {{token_type}}"), stack=True)
    b.timeseries("Cost per hour by model", USD, q(f'sum by (model) (instance_agent_model:agent_cost_usd:rate5m{{{I}}}) * 3600', "{{model}}"), stack=True)
    b.bars("Cost today by model", USD, q(f'sum by (model) (increase(agent_cost_usd_total{{{I}}}[$__range]))', "{{model}}", instant=True),
           timeFrom="now/d", hideTimeOverride=False)
    b.bars("Top agents by cost in range", USD,
           q(f'topk(10, sum by (agent) (increase(agent_cost_usd_total{{{I}, agent!=""}}[$__range])))', "{{agent}}", instant=True))

    b.row("Workflows")
    b.timeseries("Active workflows", COUNT, q(f'sum by (workflow) (agent_workflows_active{{{I}}})', "{{workflow}}"), w=8, stack=True)
    b.timeseries("Active invocations", COUNT, q(f'sum by (agent) (agent_invocations_active{{{I}}})', "{{agent}}"), w=8, stack=True)
    b.timeseries("Workflow runs ended / min", "suffix: runs/min",
                 q(f'sum by (outcome) (rate(agent_workflow_runs_total{{{I}}}[{RATE}])) * 60', "{{outcome}}"), w=8, stack=True)
    b.bars("Abandoned runs in range", COUNT,
           q(f'sum by (workflow) (increase(agent_workflow_runs_total{{{I}, outcome="abandoned"}}[$__range]))', "{{workflow}}", instant=True),
           w=24, h=6, description="Runs started but never ended within lifecycle.abandon_after (AgentWorkflowRunsAbandoned alert).")
    types = query_var("type", "Event type", f'label_values(agent_event_duration_seconds_bucket{{{I}}}, type)')
    return dashboard("agent-sidecar-overview", "Agents overview",
                     "Every agent at a glance: traffic, errors, latency, tokens, cost and workflow lifecycle.", b, [INSTANCE, types])


def agent_detail() -> dict:
    b = Board()
    sel = f'{I}, agent="$agent", workflow=~"$workflow"'
    b.stat("Events / s", EV_S, q(f'sum(rate(agent_events_total{{{sel}}}[{RATE}]))'))
    b.stat("Error ratio", RATIO, q(f'sum(rate(agent_errors_total{{{sel}}}[{RATE}])) / sum(rate(agent_events_total{{{sel}}}[{RATE}]))'))
    b.stat("Active invocations", COUNT, q(f'sum(agent_invocations_active{{{I}, agent="$agent"}})'))
    b.stat("Tokens / s", TOK_S, q(f'sum(rate(agent_tokens_total{{{I}, agent="$agent"}}[{RATE}]))'))
    b.stat("Cost / hour", USD, q(f'sum(rate(agent_cost_usd_total{{{I}, agent="$agent"}}[{RATE}])) * 3600'))
    b.stat("Cost in range", USD, q(f'sum(increase(agent_cost_usd_total{{{I}, agent="$agent"}}[$__range]))', instant=True))

    b.row("Latency")
    b.timeseries("Duration p50 / p95 / p99 by type (histogram estimate, exemplars)", SECONDS,
                 *[q(f'histogram_quantile({qu}, sum by (type, le) (rate(agent_event_duration_seconds_bucket{{{sel}}}[{RATE}])))',
                     f"{{{{type}}}} p{float(qu) * 100:g}", exemplar=True) for qu in ("0.5", "0.95", "0.99")],
                 description="Exemplars (dots) carry the trace_id of an event in that bucket; click one to open the trace.")
    b.heatmap("Duration distribution (classic histogram buckets)",
              f'sum by (le) (increase(agent_event_duration_seconds_bucket{{{sel}}}[{RATE}]))',
              description="Events per bucket of agent_event_duration_seconds, with trace_id exemplars.")
    b.timeseries("Exact window quantiles vs histogram estimate ($window)", SECONDS,
                 q(f'max by (quantile) (agent_window_duration_seconds{{{I}, agent="$agent", window="$window"}})', "exact p{{quantile}}"),
                 *[q(f'histogram_quantile({qu}, sum by (le) (rate(agent_event_duration_seconds_bucket{{{I}, agent="$agent"}}[$window])))',
                     f"estimate p{float(qu) * 100:g}") for qu in ("0.5", "0.95", "0.99")],
                 w=24, description="Exact nearest-rank quantiles from the sidecar's sliding window (needs windows.prometheus_by: [agent]) "
                 "beside the histogram's bucket-interpolated estimate over the same span. All workflows.")

    b.row("Traffic and errors")
    b.timeseries("Events by type", EV_S, q(f'sum by (type) (rate(agent_events_total{{{sel}}}[{RATE}]))', "{{type}}"), stack=True)
    b.timeseries("Errors by kind", EV_S, q(f'sum by (error) (rate(agent_errors_total{{{sel}}}[{RATE}]))', "{{error}}"), stack=True)
    b.timeseries("Events by severity", EV_S, q(f'sum by (severity) (rate(agent_events_total{{{sel}}}[{RATE}]))', "{{severity}}"), stack=True)
    b.timeseries("Active invocations", COUNT, q(f'sum(agent_invocations_active{{{I}, agent="$agent"}})', "$agent"))

    b.row("Tokens and cost")
    b.timeseries("Tokens / s by model and direction", TOK_S,
                 q(f'sum by (model, token_type) (rate(agent_tokens_total{{{I}, agent="$agent"}}[{RATE}]))', "{{model}} {{token_type}}"), stack=True)
    b.timeseries("Cost per hour by model", USD, q(f'sum by (model) (rate(agent_cost_usd_total{{{I}, agent="$agent"}}[{RATE}])) * 3600', "{{model}}"), stack=True)

    b.row("Workflows")
    b.bars("Workflow runs in range by outcome", COUNT,
           q(f'sum by (workflow, outcome) (increase(agent_workflow_runs_total{{{I}, workflow=~"$workflow"}}[$__range]))', "{{workflow}} {{outcome}}", instant=True),
           w=24, h=6)
    agent = query_var("agent", "Agent", f'label_values(agent_events_total{{{I}}}, agent)', all_=False, multi=False)
    workflow = query_var("workflow", "Workflow", f'label_values(agent_events_total{{{I}, agent="$agent"}}, workflow)')
    window = custom_var("window", "Exact window", ["1m", "5m", "15m", "1h"], "5m")
    return dashboard("agent-sidecar-agent", "Agent detail",
                     "Everything about one agent: latency with exemplars, exact window quantiles, errors, tokens and cost.",
                     b, [INSTANCE, agent, workflow, window])


def sidecar_health() -> dict:
    b = Board()
    b.stat("Sidecars up", COUNT, q(f'sum(up{{{I}}} * on (job, instance) group_left sidecar_build_info{{{I}}})'),
           description="Scrape targets that expose sidecar_build_info and answered the last scrape.")
    b.stat("Version", COUNT, q(f'count by (version) (sidecar_build_info{{{I}}})', "{{version}}"), text_mode="name")
    b.stat("Events received / s", EV_S, q(f'sum(rate(sidecar_events_received_total{{{I}}}[{RATE}]))'))
    b.stat("Rejected", RATIO, q(f'sum(rate(sidecar_events_rejected_total{{{I}}}[{RATE}])) / sum(rate(sidecar_events_received_total{{{I}}}[{RATE}]))'))
    b.stat("Dropped in range", COUNT, q(f'sum(increase(sidecar_events_dropped_total{{{I}}}[$__range])) or vector(0)', instant=True),
           description="Valid events lost before processing (queue_full). Zero when the series does not exist yet.")
    b.stat("Tail clients", COUNT, q(f'sum(sidecar_tail_clients{{{I}}})'))

    b.row("Ingest")
    b.timeseries("Ingest by transport", EV_S,
                 q(f'sum by (transport) (rate(sidecar_events_received_total{{{I}}}[{RATE}]))', "received {{transport}}"),
                 q(f'sum by (transport) (rate(sidecar_events_accepted_total{{{I}}}[{RATE}]))', "accepted {{transport}}"))
    b.timeseries("Rejects by reason", EV_S, q(f'sum by (transport, reason) (rate(sidecar_events_rejected_total{{{I}}}[{RATE}]))', "{{transport}}: {{reason}}"), stack=True)
    b.timeseries("Drops by reason", EV_S, q(f'sum by (reason) (rate(sidecar_events_dropped_total{{{I}}}[{RATE}])) or vector(0)', "{{reason}}"),
                 description="Zero when nothing was ever dropped (the series appears with the first drop).")
    b.timeseries("Pipeline queue and connections", COUNT,
                 q(f'sum(sidecar_pipeline_queue_batches{{{I}}})', "queued batches"),
                 q(f'sum(sidecar_unix_connections{{{I}}})', "unix connections"))

    b.row("Series (cardinality)")
    b.timeseries("Series by metric", COUNT, q(f'sum by (metric) (sidecar_series{{{I}}})', "{{metric}}"), w=8)
    b.timeseries("Overflowed events by metric", EV_S, q(f'sum by (metric) (rate(sidecar_series_overflow_total{{{I}}}[{RATE}]))', "{{metric}}"), w=8,
                 description="Events folded into __overflow__ series by the cardinality guard (metrics.max_series_per_metric).")
    b.timeseries("Expired series / s", "suffix: series/s", q(f'sum by (metric) (rate(sidecar_series_expired_total{{{I}}}[{RATE}]))', "{{metric}}"), w=8)

    b.row("Live tail and scrape")
    b.timeseries("Tail clients and drops", COUNT,
                 q(f'sum(sidecar_tail_clients{{{I}}})', "clients"),
                 q(f'sum(rate(sidecar_tail_dropped_total{{{I}}}[{RATE}]))', "dropped events / s"), w=8)
    b.timeseries("Scrape duration", SECONDS,
                 q(f'histogram_quantile(0.99, sum by (le) (rate(sidecar_scrape_duration_seconds_bucket{{{I}}}[{RATE}])))', "render p99"),
                 q(f'max(scrape_duration_seconds{{{I}}})', "scrape (Prometheus)"), w=8)
    b.timeseries("Process memory (RSS)", BYTES,
                 q(f'sum by (instance) (process_resident_memory_bytes{{{I}}})', "RSS {{instance}}"), w=8)
    return dashboard("agent-sidecar-health", "Sidecar health",
                     "The sidecar itself: ingest by transport, rejects, drops, cardinality, tail clients and scrape time.", b, [INSTANCE])


DASHBOARDS = {"agents-overview.json": overview, "agent-detail.json": agent_detail, "sidecar-health.json": sidecar_health}


def render() -> dict[str, str]:
    """File name -> JSON text, exactly as committed."""
    return {name: json.dumps(build(), indent=2) + "\n" for name, build in DASHBOARDS.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a committed dashboard differs from the generated one")
    args = parser.parse_args(argv)
    stale = []
    for name, text in render().items():
        path = OUT / name
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            OUT.mkdir(exist_ok=True)
            path.write_text(text)
    if stale:
        print(f"out of date: {', '.join(stale)}; run python grafana/generate.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""GenAI span -> event mapping (sidecar/ingest/genai.py) and ancestry resolution (spantree.py), no sockets."""

from __future__ import annotations

import json

import msgspec
import pytest
from otlp_spans import NOW_NS, TRACE, nested, span

from sidecar.config import OtlpConfig
from sidecar.ingest.genai import TOO_DEEP, Draft, Node, Refused, ResourceInfo, any_value, read_resource, read_span
from sidecar.ingest.spantree import SpanTree

CONFIG = OtlpConfig()
RESOURCE = {"service.name": "svc"}
NONE = ResourceInfo(None, None, None)


def mapped(s, config: OtlpConfig = CONFIG, resource=None) -> tuple[dict, Draft]:
    from otlp_spans import attributes

    _, _, draft = read_span(s, read_resource(attributes(RESOURCE if resource is None else resource), config), config)
    assert isinstance(draft, Draft), draft
    return json.loads(msgspec.json.encode(draft.event)), draft


@pytest.mark.parametrize(
    ("op", "event_type"),
    [
        ("chat", "llm.call"), ("text_completion", "llm.call"), ("generate_content", "llm.call"), ("embeddings", "llm.call"),
        ("execute_tool", "tool.call"), ("invoke_agent", "agent.completed"), ("invoke_workflow", "workflow.completed"),
    ],
)
def test_each_genai_operation_maps_to_its_event_type(op, event_type):
    assert mapped(span(op))[0]["type"] == event_type


@pytest.mark.parametrize(("op", "reason"), [(None, "no_operation"), ("create_agent", "other_operation"), ("retrieval", "other_operation")])
def test_other_spans_are_ignored_with_a_reason(op, reason):
    _, node, outcome = read_span(span(op), NONE, CONFIG)
    assert outcome == reason and node.parent is None


def test_llm_call_carries_model_tokens_times_and_ids():
    s = span("chat", 7, 3, attrs={
        "gen_ai.request.model": "gpt-4o", "gen_ai.response.model": "gpt-4o-2024-08-06",
        "gen_ai.usage.input_tokens": 1200, "gen_ai.usage.output_tokens": 300, "gen_ai.conversation.id": "conv-1",
        "gen_ai.provider.name": "openai",
    }, start=NOW_NS - 812_000_000, end=NOW_NS)
    ev, draft = mapped(s)
    assert ev["model"] == "gpt-4o-2024-08-06"  # the response's model wins over the request's
    assert (ev["input_tokens"], ev["output_tokens"]) == (1200, 300)
    assert ev["duration_ms"] == pytest.approx(812.0) and ev["timestamp"] == pytest.approx(NOW_NS / 1e9)
    assert ev["trace_id"] == ev["run_id"] == TRACE.hex() and ev["span_id"] == (7).to_bytes(8, "big").hex()
    assert ev["session_id"] == "conv-1" and draft.provider == "openai"
    assert "success" not in ev and "agent" not in ev  # the agent comes from an ancestor (span tree)
    assert ev["payload"] == {"gen_ai.provider.name": "openai", "span.name": "chat", "service.name": "svc"}


def test_request_model_and_deprecated_token_and_system_names_are_understood():
    ev, draft = mapped(span("chat", attrs={
        "gen_ai.request.model": "claude-3-5-sonnet", "gen_ai.system": "anthropic",
        "gen_ai.usage.prompt_tokens": 10, "gen_ai.usage.completion_tokens": 20,
    }))
    assert (ev["model"], ev["input_tokens"], ev["output_tokens"], draft.provider) == ("claude-3-5-sonnet", 10, 20, "anthropic")


def test_a_cost_on_the_span_is_kept():
    ev, _ = mapped(span("chat", attrs={"gen_ai.request.model": "m", "operation.cost": 0.25, "gen_ai.usage.input_tokens": 3.0}))
    assert ev["cost_usd"] == 0.25 and ev["input_tokens"] == 3  # an integral double is a token count


def test_agent_span_never_carries_tokens_its_children_already_report():
    ev, _ = mapped(span("invoke_agent", 5, attrs={
        "gen_ai.agent.name": "support", "gen_ai.usage.input_tokens": 51, "gen_ai.usage.output_tokens": 10,
        "gen_ai.aggregated_usage.input_tokens": 51, "gen_ai.request.model": "gpt-4o",
    }))
    assert not {"input_tokens", "output_tokens", "tokens", "cost_usd", "model"} & set(ev)
    assert ev["agent"] == "support" and ev["invocation_id"] == (5).to_bytes(8, "big").hex()


def test_tool_span_names_its_tool():
    ev, _ = mapped(span("execute_tool", attrs={"gen_ai.tool.name": "search", "gen_ai.agent.name": "coder"}))
    assert (ev["type"], ev["tool"], ev["agent"]) == ("tool.call", "search", "coder")


def test_workflow_span_names_its_workflow():
    ev, _ = mapped(span("invoke_workflow", attrs={"gen_ai.workflow.name": "code_review"}))
    assert (ev["type"], ev["workflow"]) == ("workflow.completed", "code_review")


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"error": True, "exception": "TimeoutError"}, "TimeoutError"),  # the recorded exception's type
        ({"error": True, "exception": "TimeoutError", "attrs": {"error.type": "rate_limited"}}, "rate_limited"),  # error.type wins
        ({"attrs": {"error.type": "429"}}, "429"),  # error.type alone is a failure
        ({"error": True}, "error"),
    ],
)
def test_failure_from_status_or_error_type(kwargs, error):
    ev, _ = mapped(span("invoke_agent", **kwargs))
    assert (ev["type"], ev["error"], ev["severity"], ev["success"]) == ("agent.failed", error, "error", False)
    ev, _ = mapped(span("chat", **kwargs))
    assert (ev["type"], ev["error"], ev["severity"], ev["success"]) == ("llm.call", error, "error", False)


CONTENT = {
    "gen_ai.input.messages": "[secret prompt]", "gen_ai.output.messages": "[secret answer]",
    "gen_ai.system_instructions": "be nice", "gen_ai.tool.call.arguments": '{"q": "secret"}',
    "gen_ai.tool.call.result": "secret result", "pydantic_ai.all_messages": "[...]", "gen_ai.prompt.0.content": "old style",
    "input.value": "openinference", "final_result": "secret",
}


def test_message_content_stays_out_of_the_payload_unless_keep_content():
    s = span("chat", attrs={**CONTENT, "gen_ai.request.temperature": 0.2})
    ev, _ = mapped(s)
    assert "secret" not in json.dumps(ev) and ev["payload"]["gen_ai.request.temperature"] == 0.2
    kept, _ = mapped(s, OtlpConfig(keep_content=True))
    assert {k: kept["payload"][k] for k in CONTENT} == CONTENT


def test_resource_fallbacks_come_from_the_configured_attributes():
    _, draft = mapped(span("chat"), OtlpConfig(workflow_attribute="service.namespace"), {"service.name": "bot", "service.namespace": "billing"})
    assert (draft.fallback_agent, draft.fallback_workflow) == ("bot", "billing")
    _, draft = mapped(span("chat"), OtlpConfig(agent_attribute=None), {"service.name": "bot"})
    assert (draft.fallback_agent, draft.fallback_workflow) == (None, None)


def test_payload_is_bounded_and_says_how_many_attributes_it_left_out():
    ev, _ = mapped(span("chat", attrs={f"k{i}": "x" * 100 for i in range(200)}), OtlpConfig(max_payload_bytes=2048))
    payload = ev["payload"]
    assert len(json.dumps(payload)) <= 2048 + 100
    assert payload["otel.attributes_left_out"] + len(payload) - 1 == 202  # 200, span.name and service.name; minus the marker


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"trace": b"\x01" * 15}, "bad_trace_id"),
        ({"trace": b""}, "bad_trace_id"),
        ({"start": NOW_NS, "end": NOW_NS - 1}, "bad_time"),
    ],
)
def test_protocol_errors_refuse_the_span_with_a_reason(kwargs, reason):
    with pytest.raises(Refused) as exc:
        read_span(span("chat", **kwargs), NONE, CONFIG)
    assert exc.value.reason == reason


def test_wrong_length_span_ids_and_too_many_attributes_are_refused():
    s = span("chat")
    s.span_id = b"\x01" * 5
    with pytest.raises(Refused, match="span_id must be 8 bytes"):
        read_span(s, NONE, CONFIG)
    s = span("chat")
    s.parent_span_id = b"\x01" * 9
    with pytest.raises(Refused, match="parent_span_id"):
        read_span(s, NONE, CONFIG)
    with pytest.raises(Refused, match="more than otlp.max_attributes") as exc:
        read_span(span("chat", attrs={f"a{i}": i for i in range(11)}), NONE, OtlpConfig(max_attributes=10))
    assert exc.value.reason == "too_many_attributes"


def test_any_value_nesting_is_bounded_and_bytes_and_infinities_are_json():
    from otlp_spans import value

    assert any_value(value(b"\x01\xff")) == "01ff"
    assert any_value(value(float("inf"))) == "inf"
    deep = any_value(nested(30))  # about the deepest upb builds (its limit: 100 messages)
    for _ in range(8):
        deep = deep["k"]
    assert deep == TOO_DEEP
    assert any_value(value({"a": [1, "b", {"c": True}]})) == {"a": [1, "b", {"c": True}]}


# -- span tree ------------------------------------------------------------------------------------


def key(sid: int, trace: bytes = TRACE) -> bytes:
    return trace + sid.to_bytes(8, "big")


def node(parent: int | None, agent: str | None = None, workflow: str | None = None) -> Node:
    return Node(key(parent) if parent else None, agent is not None, agent, workflow)


def test_a_child_that_arrives_before_its_agent_waits_then_gets_the_agent_and_invocation():
    tree: SpanTree[str] = SpanTree(100, 100, hold=30)
    # tool (3) under a framework span (2) under the agent (1) under the workflow (0 -> root)
    tree.remember(key(3), node(2))
    assert tree.place(key(3), node(2), "tool", now=0) is None
    tree.remember(key(2), node(1))
    assert tree.wake([key(2)]) == []  # its parent is here; the agent is not yet
    tree.remember(key(1), node(9, agent="planner"))
    assert tree.wake([key(1)]) == []
    tree.remember(key(9), node(None, workflow="review"))
    [held] = tree.wake([key(9)])
    assert held.item == "tool"
    assert (held.context.agent, held.context.workflow, held.context.invocation_id) == ("planner", "review", key(1)[16:].hex())
    assert not tree.held and not tree._waiting


def test_a_span_whose_ancestors_never_come_goes_out_after_the_hold_with_what_is_known():
    tree: SpanTree[str] = SpanTree(100, 100, hold=30)
    tree.remember(key(2), node(1, agent="coder"))  # an agent span whose parent never arrives
    tree.place(key(3), node(2), "llm", now=0)
    assert tree.expire(29.9) == ([], [])
    [held], overflow = tree.expire(30.0)
    assert held.item == "llm" and held.context.agent == "coder" and held.context.workflow is None and overflow == []


def test_more_than_max_held_sends_the_oldest_out_early():
    tree: SpanTree[int] = SpanTree(100, max_held=2, hold=30)
    for i in range(5):
        tree.place(key(10 + i), node(99), i, now=i)
    timed_out, overflow = tree.expire(now=5)
    assert timed_out == [] and [h.item for h in overflow] == [0, 1, 2] and len(tree.held) == 2


def test_remembered_spans_are_bounded_oldest_first():
    tree: SpanTree[int] = SpanTree(max_tracked=3, max_held=10, hold=30)
    for i in range(1, 6):
        tree.remember(key(i), node(None))
    assert list(tree.nodes) == [key(3), key(4), key(5)]


def test_a_parent_cycle_ends_and_a_remote_parent_is_a_root():
    tree: SpanTree[int] = SpanTree(100, 100, hold=30)
    tree.remember(key(1), node(2))
    tree.remember(key(2), node(1))
    assert tree.place(key(3), node(1), 0, now=0) is not None  # walked, gave up, no hang
    _, n, _ = read_span(span("chat", 4, 3, remote_parent=True), NONE, CONFIG)
    assert n.parent is None and tree.place(key(4), n, 1, now=0) is not None


def test_restore_and_discard_undo_one_request():
    tree: SpanTree[str] = SpanTree(100, 100, hold=30)
    tree.place(key(2), node(1), "old", now=0)
    tree.remember(key(1), node(None, agent="a"))
    woken = tree.wake([key(1)])
    assert [h.item for h in woken] == ["old"] and not tree.held
    tree.place(key(5), node(4), "new", now=1)
    tree.discard([key(5)])
    tree.restore(woken)
    assert list(tree.held) == [key(2)]
    [again], _ = tree.expire(30)
    assert again.item == "old" and again.context.agent == "a"


def test_the_same_span_placed_twice_waits_once():
    tree: SpanTree[str] = SpanTree(100, 100, hold=30)
    tree.place(key(2), node(1), "first", now=0)
    tree.place(key(2), node(1), "retry", now=1)
    tree.remember(key(1), node(None))
    assert [h.item for h in tree.wake([key(1)])] == ["retry"]


# -- what the one-pass attribute reading must keep ----------------------------------------------


def test_falsy_and_non_string_values_keep_their_type_in_the_payload():
    attrs = {"empty": "", "zero": 0, "no": False, "half": 0.5, "big": 2**40, "raw": b"\x00\x01", "list": [0, ""], "text": "t"}
    ev, _ = mapped(span("chat", attrs=attrs))
    assert {k: ev["payload"][k] for k in attrs} == {**attrs, "raw": "0001", "list": [0, ""]}


def test_attributes_a_span_kind_does_not_map_ride_in_the_payload():
    usage = {"gen_ai.usage.input_tokens": 51, "gen_ai.usage.output_tokens": 10, "gen_ai.request.model": "gpt-4o", "operation.cost": 0.1}
    ev, _ = mapped(span("invoke_agent", attrs={"gen_ai.agent.name": "support", **usage}))
    assert {k: ev["payload"][k] for k in usage} == usage  # the agent's aggregated usage is shown, never counted
    ev, _ = mapped(span("execute_tool", attrs={"gen_ai.tool.name": "search", "gen_ai.response.model": "m", "session.id": "s1"}))
    assert ev["payload"]["gen_ai.response.model"] == "m" and ev["session_id"] == "s1" and "session.id" not in ev["payload"]
    ev, _ = mapped(span("chat", attrs={"gen_ai.response.model": "", "gen_ai.request.model": "req", "gen_ai.tool.name": "t"}))
    assert ev["model"] == "req" and ev["payload"]["gen_ai.tool.name"] == "t"  # an empty response model falls back
    assert not {"gen_ai.response.model", "gen_ai.request.model"} & set(ev["payload"])


def test_content_stays_out_whatever_was_seen_before_with_keep_content_and_beyond_the_key_cache():
    from sidecar.ingest import genai

    s = span("chat", attrs={**CONTENT, "gen_ai.prompt.7.content": "secret seven"})
    mapped(s, OtlpConfig(keep_content=True))  # the same keys seen first where content is kept
    for _ in range(2):  # the first time and from the cache
        ev, _ = mapped(s)
        assert "secret" not in json.dumps(ev) and "old style" not in json.dumps(ev)
    routes = genai._ROUTES[False]
    saved = dict(routes)
    try:
        routes.update({f"filler.{i}": genai._PAYLOAD for i in range(genai._MAX_ROUTES)})  # the cache is full
        ev, _ = mapped(span("chat", attrs={"gen_ai.prompt.99.content": "secret", "llm.input_messages.0.message.content": "secret", "new.key": 1}))
        assert "secret" not in json.dumps(ev) and ev["payload"]["new.key"] == 1 and "new.key" not in routes
    finally:
        routes.clear()
        routes.update(saved)


def test_remembered_span_nodes_are_invisible_to_the_garbage_collector():
    import gc

    _, node, draft = read_span(span("chat", 2, 1, attrs={"gen_ai.workflow.name": "w"}), NONE, CONFIG)
    assert not gc.is_tracked(node) and not gc.is_tracked(draft)  # up to otlp.max_tracked_spans of them live on


def test_remember_all_keeps_the_newest_spans_within_the_bound():
    tree: SpanTree[int] = SpanTree(max_tracked=3, max_held=10, hold=30)
    tree.remember_all([(key(i), node(None)) for i in range(1, 3)])
    tree.remember_all([(key(i), node(None, agent=f"a{i}")) for i in range(2, 6)])
    assert list(tree.nodes) == [key(3), key(4), key(5)] and tree.nodes[key(4)].agent == "a4"

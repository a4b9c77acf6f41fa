"""The host's dependencies with their test doubles: an action that uses kv,
config, http, enqueue, log and context runs in plain pytest."""

import datetime
import math
from typing import Annotated

import pytest

import cairn
from cairn import Config, Context, Depends, Enqueue, Http, Kv, Log, Request, Resolver, Response, action
from cairn.testing import (FixedConfig, FixedContext, MemoryKv, RecordingEnqueue, RecordingLog, ScriptedHttp,
                           install, invoke)


@action
def mirror(
    path: str,
    config: Annotated[Config, Depends()],
    http: Annotated[Http, Depends()],
    kv: Annotated[Kv, Depends()],
) -> int:
    body = http.get(f"{config.require('origin')}/{path}").error_for_status().body
    kv.set(path, body)
    return len(body)


def test_an_action_with_kv_config_and_http_runs_on_doubles():
    kv = MemoryKv()
    http = (ScriptedHttp()
            .on("GET", "https://origin.test/a", Response(200, body=b"abc"))
            .on("GET", "https://origin.test/b", Response(503, body="down")))
    resolver = Resolver(config=FixedConfig({"origin": "https://origin.test"}), http=http, kv=kv)

    assert mirror.call(resolver, path="a") == 3
    assert kv.value("a") == b"abc"
    with install(resolver):
        outcome = invoke(mirror, path="b")
    assert outcome.error["type"] == "HttpStatusError" and outcome.retryable
    assert outcome.error["message"] == "GET https://origin.test/b answered 503: down"
    assert [r.url for r in http.requests] == ["https://origin.test/a", "https://origin.test/b"]


def test_missing_config_key_is_a_non_retryable_config_error():
    with install(Resolver(config=FixedConfig(), http=ScriptedHttp(), kv=MemoryKv())):
        outcome = invoke(mirror, path="a")
    assert (outcome.error["type"], outcome.error["module"], outcome.retryable) == ("ConfigError", "cairn", False)
    assert outcome.error["message"] == "config key `origin` is not set for this plugin"


def test_memory_kv_behaves_like_the_host():
    kv = Kv(MemoryKv({"k": b"v"}))
    assert kv.get("k") == b"v" and kv.get("none") is None
    assert kv.increment("n") == 1 and kv.increment("n", 41) == 42 and kv.increment("n", 0) == 42
    assert kv.compare_and_swap("c", None, b"1") and not kv.compare_and_swap("c", None, b"2")
    assert kv.compare_and_swap("c", b"1", b"2") and kv.get("c") == b"2"
    assert kv.delete("c") and not kv.delete("c")
    kv.set_as("point", {"x": [1, 2.5]})
    assert kv.get_as("point") == {"x": [1, 2.5]}
    with pytest.raises(cairn.Error, match="the value is not a counter"):
        kv.increment("k")
    backend = MemoryKv()
    backend.set_unavailable(True)
    with pytest.raises(cairn.Error) as err:
        Kv(backend).get("x")
    assert (err.value.type_name, err.value.retryable) == ("KvError", True)


def test_scripted_http_fails_unscripted_requests_and_scripted_errors():
    http = Http(ScriptedHttp().on_error("GET", "https://down.test/", cairn.Error("refused", type="HttpError", retryable=True)))
    with pytest.raises(cairn.Error, match="refused"):
        http.get("https://down.test/")
    with pytest.raises(cairn.Error, match="ScriptedHttp has no answer for POST https://x.test/"):
        http.send(Request("post", "https://x.test/"))
    assert Response(200, body="é").text() == "é"
    assert Response(200, body='{"a": 1}').json() == {"a": 1}


def test_enqueue_records_rows_and_honours_idempotency_keys():
    recorder = RecordingEnqueue()

    @action
    def checkout(order: int, enqueue: Annotated[Enqueue, Depends()]) -> int:
        return enqueue.enqueue("mail:receipt", {"order": order}, delay=60, idempotency_key=f"r-{order}")

    with install(Resolver(enqueue=recorder)):
        assert checkout(order=7) == 1
        assert checkout(order=7) == 1
        assert checkout(order=8) == 2
    row = recorder.enqueued[0]
    assert (row.module, row.name, row.kwargs, row.options.delay_ms) == ("mail", "receipt", {"order": 7}, 60_000)
    with pytest.raises(cairn.Error, match="name the action as `module:name`"):
        Enqueue(recorder).enqueue("receipt", {})
    with pytest.raises(cairn.Error, match="must be a dict or a dataclass"):
        Enqueue(recorder).enqueue("a:b", [1])


def test_log_and_context_have_doubles_and_work_without_them(capsys):
    records = RecordingLog()

    @action
    def charge(amount: int, log: Annotated[Log, Depends()], context: Annotated[Context, Depends()]) -> str:
        log.info("charging", amount=amount)
        return f"{context.action_id()}#{context.attempt()}"

    with install(Resolver(log=records, context=FixedContext("row-9", attempt=3))):
        assert charge(amount=5) == "row-9#3"
    assert [(r.level, r.message, r.fields) for r in records.records] == [("info", "charging", [("amount", "5")])]
    assert charge(amount=6) == "native#1"
    assert "[INFO] charging amount=6" in capsys.readouterr().err
    deadline = Context(FixedContext(deadline_unix_ms=0)).deadline()
    assert deadline == datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)


def test_http_urls_split_as_the_rust_sdk_splits_them():
    from cairn.http import split_url

    assert split_url("https://api.test") == ("https", "api.test", "/")
    assert split_url("http://h:8080?q=1#frag") == ("http", "h:8080", "/?q=1")
    with pytest.raises(cairn.Error, match="expected an absolute URL"):
        split_url("api.test/x")


def test_a_negative_or_infinite_delay_is_rejected_as_a_timedelta_as_a_number():
    recorder = RecordingEnqueue()
    enqueue = Enqueue(recorder)
    for delay in (-1, -0.5, datetime.timedelta(seconds=-1), datetime.timedelta(milliseconds=-1), math.inf, math.nan):
        with pytest.raises(cairn.Error, match="delay must be seconds") as err:
            enqueue.enqueue("a:b", {}, delay=delay)
        assert (err.value.type_name, err.value.module, err.value.retryable) == ("EnqueueError", "cairn", False)
    assert recorder.enqueued == []
    enqueue.enqueue("a:b", {}, delay=datetime.timedelta(0))
    enqueue.enqueue("a:b", {}, delay=datetime.timedelta(seconds=1.5))
    assert [row.options.delay_ms for row in recorder.enqueued] == [0, 1_500]


def test_kv_values_that_do_not_serialize_raise_cairn_serialization_error():
    kv = Kv(MemoryKv({"garbage": b"\xff"}))
    with pytest.raises(cairn.SerializationError) as err:
        kv.set_as("k", object())
    assert (err.value.type_name, err.value.module, err.value.retryable) == ("SerializationError", "cairn", False)
    assert str(err.value) == "kv value under `k`: cannot serialize a value of type object"
    with pytest.raises(cairn.SerializationError, match="kv value under `garbage`: payload is not a protobuf"):
        kv.get_as("garbage")


def test_enqueue_arguments_that_contain_themselves_are_an_enqueue_error():
    loop = []
    loop.append(loop)
    with pytest.raises(cairn.Error) as err:
        Enqueue(RecordingEnqueue()).enqueue("a:b", {"x": loop})
    assert err.value.type_name == "EnqueueError"
    assert str(err.value) == "arguments do not serialize: value is nested too deeply to serialize (or contains itself)"

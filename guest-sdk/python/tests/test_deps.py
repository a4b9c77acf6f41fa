"""Depends: resolution, caching per invocation, sync and async dependencies,
cycles, failures, and resolution when an action is called directly."""

import asyncio
from typing import Annotated

import pytest

import cairn
from cairn import Config, Depend, DependencyError, Depends, Kv, Resolver, action
from cairn.testing import FixedConfig, MemoryKv, install, invoke


class Counter:
    built = 0

    def __init__(self) -> None:
        Counter.built += 1


@pytest.fixture(autouse=True)
def reset_counter():
    Counter.built = 0


def test_depend_is_the_seed_alias_of_depends():
    assert Depend is Depends
    assert Depends().use_cache is True
    assert Depends(Counter, use_cache=False).use_cache is False


def test_direct_call_resolves_dependencies_that_take_dependencies():
    def greeting(config: Annotated[Config, Depends()]) -> str:
        return config.get("greeting") or "Hello"

    async def punctuation() -> str:
        return "!"

    def sentence(g: Annotated[str, Depends(greeting)], p: Annotated[str, Depends(punctuation)]) -> str:
        return g + ", {}" + p

    @action
    def hello(name: str, template: Annotated[str, Depends(sentence)]) -> str:
        return template.format(name)

    with install(Resolver(config=FixedConfig({"greeting": "Hi"}))):
        assert hello(name="Ada") == "Hi, Ada!"
    assert hello.call(Resolver(config=FixedConfig()), "Ada") == "Hello, Ada!"
    # A dependency passed by hand is used as is.
    assert hello("Ada", template="{}?") == "Ada?"


def test_async_action_called_directly_awaits_async_dependencies():
    async def slow_value() -> int:
        await asyncio.sleep(0.001)  # a real event-loop wait: fine when called from a loop
        return 41

    @action
    async def answer(value: Annotated[int, Depends(slow_value)]) -> int:
        return value + 1

    assert asyncio.run(answer()) == 42


def test_use_cache_builds_once_per_invocation_and_false_builds_per_use():
    def left(c: Annotated[Counter, Depends(Counter)]) -> Counter:
        return c

    def right(c: Annotated[Counter, Depends(Counter)]) -> Counter:
        return c

    def fresh_left(c: Annotated[Counter, Depends(Counter, use_cache=False)]) -> Counter:
        return c

    def fresh_right(c: Annotated[Counter, Depends(Counter, use_cache=False)]) -> Counter:
        return c

    @action
    def shared(a: Annotated[Counter, Depends(left)], b: Annotated[Counter, Depends(right)]) -> bool:
        return a is b

    @action
    def separate(a: Annotated[Counter, Depends(fresh_left)], b: Annotated[Counter, Depends(fresh_right)]) -> bool:
        return a is b

    assert shared() is True and Counter.built == 1
    assert shared() is True and Counter.built == 2  # a new invocation builds again
    assert separate() is False and Counter.built == 4
    assert invoke(shared).result is True and Counter.built == 5


def test_a_cycle_is_a_dependency_error_naming_it():
    from cycle_deps import chicken_fn

    @action
    def farm(c: Annotated[object, Depends(chicken_fn)]) -> None: ...

    with pytest.raises(DependencyError) as err:
        farm()
    assert str(err.value) == "dependency cycle: `chicken_fn` -> `egg_fn` -> `chicken_fn`"
    assert err.value.retryable is False
    outcome = invoke(farm)
    assert outcome.error["type"] == "DependencyError"
    assert outcome.error["values"]["cause_type"] == "DependencyCycle"


def test_a_failing_dependency_names_the_chain_and_keeps_retryability():
    def busy() -> int:
        raise cairn.Error("upstream busy", type="Busy", retryable=True)

    def needs_busy(b: Annotated[int, Depends(busy)]) -> int:
        return b

    calls = []

    @action
    def work(n: Annotated[int, Depends(needs_busy)]) -> int:
        calls.append(n)
        return n

    outcome = invoke(work)
    assert outcome.error["type"] == "DependencyError"
    assert outcome.error["message"] == "dependency `busy` failed (via `needs_busy` -> `busy`): upstream busy"
    assert outcome.retryable is True
    assert outcome.error["values"] == {
        "dependency": "busy", "path": ["needs_busy", "busy"], "cause_type": "Busy", "cause_module": __name__,
    }
    assert "raise cairn.Error" in outcome.error["traceback"]
    assert calls == []  # the action never ran


def test_builtins_without_doubles_say_which_double_to_give():
    @action
    def store(kv: Annotated[Kv, Depends()]) -> None: ...

    outcome = invoke(store)
    assert outcome.error["values"]["cause_type"] == "MissingBackend"
    assert "Resolver(kv=MemoryKv())" in outcome.error["message"]
    with install(Resolver(kv=MemoryKv())):
        assert invoke(store).ok


def test_overrides_replace_a_whole_dependency():
    def real() -> str:
        raise AssertionError("not called when overridden")

    @action
    def which(value: Annotated[str, Depends(real)]) -> str:
        return value

    assert which.call(Resolver(overrides={real: "fake"})) == "fake"


def test_sync_action_with_a_dependency_waiting_on_io_stalls_clearly():
    class Io:
        # What an awaited future does while it waits: yield itself to the loop.
        def __await__(self):
            yield self

    async def waits() -> None:
        await Io()

    @action
    def impatient(w: Annotated[None, Depends(waits)]) -> None: ...

    outcome = invoke(impatient)
    assert outcome.error["type"] == "StalledCoroutine"
    assert outcome.error["module"] == "cairn"
    assert "nothing inside a plugin can complete" in outcome.error["message"]


def test_async_action_yielding_cooperatively_runs_to_completion_in_invoke():
    @action
    async def cooperative() -> int:
        total = 0
        for i in range(3):
            await asyncio.sleep(0)
            total += i
        return total

    assert invoke(cooperative).result == 3


def test_dependency_signature_problems_are_found():
    from cairn.deps import SignatureError, check_dependency_params

    def needs_kwarg(x: int) -> int:
        return x

    @action
    def uses(v: Annotated[int, Depends(needs_kwarg)]) -> int:
        return v

    with pytest.raises(SignatureError, match="parameter `x` of dependency `needs_kwarg` is neither"):
        check_dependency_params(uses.func)

    with pytest.raises(SignatureError, match=r"takes `\*args`"):

        @action
        def star(*args) -> None: ...

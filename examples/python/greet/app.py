"""The greet plugin: the smallest useful cairn plugin in Python."""

import cairn
from cairn import action

cairn.plugin(module="greet")


@action
def hello(name: str) -> str:
    """Greet someone by name."""
    return f"Hello, {name}!"


@action(name="shout", timeout="2s")
async def hello_loudly(name: str, times: int = 1) -> str:
    """Greet someone by name, loudly (an async action with a default)."""
    return " ".join([f"HELLO, {name.upper()}!"] * times)

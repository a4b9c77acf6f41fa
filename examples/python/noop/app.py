"""The noop plugin: an action that does nothing, to measure what a Python
instance costs the host (`cairn bench --action noop:noop`)."""

import cairn
from cairn import action

cairn.plugin(module="noop")


@action
def noop() -> None:
    """Do nothing."""

"""The deps_cache plugin: `use_cache` observed from inside a real guest.

`cached()` and `fresh()` each resolve two dependencies that both need
`Shared`, and return how many times `Shared` was built in the invocation: 1
for `cached` (`use_cache=True`, the default: one value per invocation), 2 for
`fresh` (`use_cache=False`). It imports no host interface at all.
"""

from typing import Annotated

import cairn
from cairn import Depends, action

cairn.plugin(module="deps_cache")


class Builds:
    """Counts constructions within one invocation (cached: one per invocation)."""

    def __init__(self) -> None:
        self.count = 0


class Shared:
    def __init__(self, builds: Annotated[Builds, Depends(Builds)]) -> None:
        builds.count += 1


def cached_left(shared: Annotated[Shared, Depends(Shared)]) -> Shared:
    return shared


def cached_right(shared: Annotated[Shared, Depends(Shared)]) -> Shared:
    return shared


def fresh_left(shared: Annotated[Shared, Depends(Shared, use_cache=False)]) -> Shared:
    return shared


def fresh_right(shared: Annotated[Shared, Depends(Shared, use_cache=False)]) -> Shared:
    return shared


@action
def cached(
    builds: Annotated[Builds, Depends(Builds)],
    left: Annotated[Shared, Depends(cached_left)],
    right: Annotated[Shared, Depends(cached_right)],
) -> int:
    """How many times `Shared` was built for two dependencies sharing it (cached)."""
    return builds.count


@action
def fresh(
    builds: Annotated[Builds, Depends(Builds)],
    left: Annotated[Shared, Depends(fresh_left)],
    right: Annotated[Shared, Depends(fresh_right)],
) -> int:
    """How many times `Shared` was built for two dependencies asking with use_cache=False."""
    return builds.count

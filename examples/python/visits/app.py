"""The visits plugin: kv and config together, through a user-defined
`Depends` chain.

`visit` needs a `Counter`, which needs `Kv` and the `Site`, which needs
`Config`. The component therefore imports `cairn:plugin/kv` and
`cairn:plugin/config` (and nothing else): grant both in `cairn.toml`:

```toml
[plugins.visits]
grants = ["kv", "config"]
[plugins.visits.config]
site_name = "docs"
```
"""

from dataclasses import dataclass
from typing import Annotated

import cairn
from cairn import Config, Depends, Kv, action

cairn.plugin(module="visits")


@dataclass
class Site:
    """Which site this plugin counts visits for, from the operator's config."""

    name: str
    base_url: str


def site(config: Annotated[Config, Depends()]) -> Site:
    """A dependency that takes a dependency: `site_name` must be set."""
    return Site(config.require("site_name"), config.get("base_url") or "https://example.test")


class Counter:
    """Counts visits per page in the plugin's kv namespace."""

    def __init__(self, kv: Annotated[Kv, Depends()], site: Annotated[Site, Depends(site)]) -> None:
        self.kv = kv
        self.site = site

    def key(self, page: str) -> str:
        return f"visits:{self.site.name}:{page}"

    def bump(self, page: str) -> int:
        return self.kv.increment(self.key(page))

    def peek(self, page: str) -> int:
        return self.kv.increment(self.key(page), 0)


@dataclass
class Visit:
    """What `visit` returns (a dataclass: stored as a basemodel)."""

    site: str
    url: str
    visits: int


@action
def visit(page: str, counter: Annotated[Counter, Depends(Counter)], site: Annotated[Site, Depends(site)]) -> Visit:
    """Count a visit to `page` and say which visit it was."""
    return Visit(site.name, f"{site.base_url}/{page}", counter.bump(page))


@action
def peek(page: str, counter: Annotated[Counter, Depends(Counter)]) -> int:
    """How many visits `page` has had."""
    return counter.peek(page)

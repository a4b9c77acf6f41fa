"""Dependency `cairn:plugin/config`: the plugin's own configuration values and
secrets, as the operator set them for this plugin in `cairn.toml`.

```python
@action
def endpoint(config: Annotated[Config, Depends()]) -> str:
    region = config.get("region") or "eu"
    return f"{config.require('api_url')}/{region}"
```

A missing key is `None` from `get` and a non-retryable `ConfigError` from
`require`: the operator has to set it, so running the action again would not
help. A `Config` never prints its values (its `repr` is opaque): they may be
secrets.
"""

from __future__ import annotations

from typing import Protocol

from .errors import SDK_MODULE, Error


class ConfigBackend(Protocol):
    """Where a `Config` reads from: the host, or `testing.FixedConfig`."""

    def get(self, key: str) -> str | None: ...


class Config:
    """The plugin's configuration values and secrets."""

    def __init__(self, backend: ConfigBackend) -> None:
        self._backend = backend

    def get(self, key: str) -> str | None:
        """The value (or secret) `key`, or None if the operator set no such key."""
        return self._backend.get(key)

    def require(self, key: str) -> str:
        """The value (or secret) `key`; a non-retryable `ConfigError` naming
        the key if it is not set."""
        value = self.get(key)
        if value is None:
            raise Error(f"config key `{key}` is not set for this plugin", type="ConfigError", module=SDK_MODULE)
        return value

    def __repr__(self) -> str:
        return "Config(..)"

    @classmethod
    def _construct(cls, resolver) -> "Config":
        backend = resolver.backend("config")
        if backend is None:
            backend = _host_backend()
        return cls(backend)


class _HostConfig:
    def __init__(self) -> None:
        from wit_world.imports import config as wit

        self._wit = wit

    def get(self, key: str) -> str | None:
        return self._wit.get(key)


def _host_backend() -> ConfigBackend:
    from .builtin import missing_backend
    from .deps import in_component

    if not in_component():
        raise missing_backend("cairn:plugin/config", "config", 'FixedConfig({"key": "value"})')
    return _HostConfig()

"""cairn's Python SDK: write durable actions as plain Python functions and
build them into the same sandboxed WebAssembly components as the Rust SDK.

```python
import cairn
from cairn import action

cairn.plugin(module="greet")

@action
def hello(name: str) -> str:
    \"\"\"Greet someone by name.\"\"\"
    return f"Hello, {name}!"
```

`cairn-py build DIR -o greet.wasm` turns the plugin directory into a
component; drop it into a `cairn serve` plugin directory and the host runs
`greet:hello`. See the package README for the whole story.
"""

from .actions import Action, RetryPolicy, action, plugin
from .config import Config
from .context import Context
from .deps import Depend, DependencyError, Depends, Resolver
from .enqueue import Enqueue, EnqueueOptions
from .errors import ArgumentError, Error, SerializationError
from .http import Http, Request, Response
from .kv import Kv
from .log import Log
from .payload import (
    ErrorValue,
    Model,
    PayloadError,
    ResultPayload,
    deserialize_result_payload,
    serialize_error_payload,
    serialize_result_payload,
)
from .registry import ActionRegistry, registry

__all__ = [
    "Action", "ActionRegistry", "ArgumentError", "Config", "Context", "Depend", "DependencyError", "Depends",
    "Enqueue", "EnqueueOptions", "Error", "ErrorValue", "Http", "Kv", "Log", "Model", "PayloadError", "Request",
    "Response", "ResultPayload", "Resolver", "RetryPolicy", "SerializationError", "action",
    "deserialize_result_payload", "plugin", "registry", "serialize_error_payload", "serialize_result_payload",
]

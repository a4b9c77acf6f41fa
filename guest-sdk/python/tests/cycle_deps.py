"""Two dependencies that need each other (string annotations, so each can
name the other before it is defined)."""

from __future__ import annotations

from typing import Annotated

from cairn import Depends


def chicken_fn(e: Annotated[object, Depends(egg_fn)]) -> object:
    return e


def egg_fn(c: Annotated[object, Depends(chicken_fn)]) -> object:
    return c

"""Deprecated keyword names: callers' old spellings mapped to the one vocabulary, with a warning."""
from __future__ import annotations

import functools
import warnings
from typing import Any, Callable, TypeVar

__all__ = ["accepts_renamed"]

F = TypeVar("F", bound=Callable[..., Any])


def accepts_renamed(**renamed: str) -> Callable[[F], F]:
    """Decorator: the function also takes each ``old=new`` keyword's old name (DeprecationWarning)."""
    def deco(func: F) -> F:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            for old, new in renamed.items():
                if old in kwargs:
                    if new in kwargs:
                        raise TypeError(f"{func.__qualname__}() got both {old}= and {new}=; pass {new}= only")
                    warnings.warn(f"{old}= is deprecated; use {new}=", DeprecationWarning, stacklevel=2)
                    kwargs[new] = kwargs.pop(old)
            return func(*args, **kwargs)
        return wrapper  # type: ignore[return-value]
    return deco

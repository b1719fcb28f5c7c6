"""Keywords renamed for one vocabulary (issue #16): the old name keeps working for one release.

A renamed keyword is translated to the new one with a ``DeprecationWarning`` that names the
new keyword, so callers we do not own (scripts, saved configs, other model files) keep running
while they move. Passing both names with different values is a ``TypeError``: the call would be
ambiguous. On a class the old name also stays readable as a property that warns the same way.
"""

from __future__ import annotations

import functools
import warnings
from typing import Callable, TypeVar

T = TypeVar("T")


def _translate(owner: str, old: str, new: str, kwargs: dict, stacklevel: int) -> None:
    if old not in kwargs:
        return
    value = kwargs.pop(old)
    if new in kwargs and kwargs[new] != value:
        raise TypeError(
            f"{owner}: got {old}={value!r} and {new}={kwargs[new]!r}; {old} is the deprecated name of "
            f"{new}, pass {new}= only"
        )
    warnings.warn(f"{owner}: {old}= is deprecated, use {new}= (same meaning; {old}= goes in the next release)",
                  DeprecationWarning, stacklevel=stacklevel + 1)
    kwargs[new] = value


def renamed_keyword(old: str, new: str, *, owner: str | None = None) -> Callable[[T], T]:
    """Decorator for a function or a class: ``old=`` is accepted as a deprecated alias of ``new=``.

    On a class it wraps ``__init__`` (a dataclass's generated one included) and adds a read-only
    property ``old`` returning ``new``'s value, with the same warning.

    Example::

        @renamed_keyword("criterion", "stopping_test")
        @dataclasses.dataclass(frozen=True, kw_only=True)
        class Solver:
            stopping_test: str = "per_sample"
    """

    def decorate(target):
        name = owner or target.__name__
        if isinstance(target, type):
            init = target.__init__

            @functools.wraps(init)
            def __init__(self, *args, **kwargs):
                # 2 frames up from _translate: this wrapper, then the caller that wrote old=
                _translate(name, old, new, kwargs, stacklevel=2)
                init(self, *args, **kwargs)

            target.__init__ = __init__

            def read_old(self):
                warnings.warn(f"{name}.{old} is deprecated, read {name}.{new} (same value)",
                              DeprecationWarning, stacklevel=2)
                return getattr(self, new)

            setattr(target, old, property(read_old, doc=f"Deprecated alias of ``{new}``."))
            return target

        @functools.wraps(target)
        def call(*args, **kwargs):
            _translate(name, old, new, kwargs, stacklevel=2)
            return target(*args, **kwargs)

        return call

    return decorate

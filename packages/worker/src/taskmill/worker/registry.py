"""The handler registry and the ``@task`` decorator that fills it."""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import Enum
from typing import Any, TypeVar, overload

from taskmill.worker.context import TaskContext

F = TypeVar("F", bound=Callable[..., Any])


class ContextMode(Enum):
    """How a handler takes its arguments."""

    NONE = "none"  # no parameters at all
    PAYLOAD = "payload"  # handler(payload)
    POSITIONAL = "positional"  # handler(payload, context)
    KEYWORD = "keyword"  # handler(payload, <name>=context)


@dataclass(frozen=True)
class Handler:
    """A registered handler.

    Attributes:
        name: The command name tasks use to reach it.
        func: The function itself.
        timeout: The default timeout in seconds when a task sets none; ``None`` for none.
        process: Whether it runs in a child process, so a timeout or shutdown can stop it.
        context_mode: How the function takes the payload and the context.
        context_name: The keyword that receives the context, for ``ContextMode.KEYWORD``.
    """

    name: str
    func: Callable[..., Any]
    timeout: float | None = None
    process: bool = False
    context_mode: ContextMode = ContextMode.PAYLOAD
    context_name: str = ""

    @property
    def wants_context(self) -> bool:
        """Whether the function takes a :class:`TaskContext`."""
        return self.context_mode in (ContextMode.POSITIONAL, ContextMode.KEYWORD)

    @property
    def origin(self) -> str:
        """The function's dotted name, for messages."""
        module = getattr(self.func, "__module__", None) or "?"
        return f"{module}.{getattr(self.func, '__qualname__', repr(self.func))}"

    def call(self, payload: Any, context: TaskContext | None) -> Any:
        """Calls the function with the payload and, when it asks for it, the context."""
        if self.context_mode is ContextMode.NONE:
            return self.func()
        if self.context_mode is ContextMode.POSITIONAL:
            return self.func(payload, context)
        if self.context_mode is ContextMode.KEYWORD:
            return self.func(payload, **{self.context_name: context})
        return self.func(payload)


def _is_context_annotation(annotation: Any) -> bool:
    if annotation is TaskContext:
        return True
    # With ``from __future__ import annotations`` the annotation is a string.
    return isinstance(annotation, str) and annotation.strip("'\"").split(".")[-1] == "TaskContext"


def context_mode_of(func: Callable[..., Any]) -> tuple[ContextMode, str]:
    """Works out from a function's signature whether and how it takes a context.

    Raises:
        TypeError: The function cannot take a payload the way handlers are called.
    """
    params = list(inspect.signature(func).parameters.values())
    for param in params[1:]:
        named = param.name == "context" or _is_context_annotation(param.annotation)
        if named and param.kind is not inspect.Parameter.POSITIONAL_ONLY:
            return ContextMode.KEYWORD, param.name
    positional = [
        p
        for p in params
        if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    ]
    if len(positional) >= 2:
        return ContextMode.POSITIONAL, ""
    if positional or any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in params):
        return ContextMode.PAYLOAD, ""
    if not params:
        return ContextMode.NONE, ""
    raise TypeError(f"handler {func.__qualname__} must take the payload as its first parameter")


class Registry:
    """Handlers by command name."""

    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}
        self._lock = threading.Lock()

    def register(self, handler: Handler) -> None:
        """Adds a handler.

        Registering the same function again (a module imported twice) replaces it.

        Raises:
            ValueError: Another function already has that name.
        """
        with self._lock:
            existing = self._handlers.get(handler.name)
            if existing is not None and existing.origin != handler.origin:
                raise ValueError(
                    f"command {handler.name!r} is already registered by {existing.origin}"
                )
            self._handlers[handler.name] = handler

    def get(self, name: str) -> Handler | None:
        """The handler registered under ``name``, if any."""
        return self._handlers.get(name)

    def snapshot(self) -> dict[str, Handler]:
        """A copy of the handlers by name."""
        with self._lock:
            return dict(self._handlers)

    def __iter__(self) -> Iterator[str]:
        return iter(self.snapshot())

    def task(
        self,
        name: str | None = None,
        *,
        timeout: float | None = None,
        process: bool = False,
    ) -> Callable[[F], F]:
        """Returns a decorator that registers a function under ``name`` (default its name)."""
        if timeout is not None and timeout <= 0:
            raise ValueError("timeout must be positive")

        def decorate(func: F) -> F:
            mode, context_name = context_mode_of(func)
            self.register(
                Handler(name or func.__name__, func, timeout, process, mode, context_name)
            )
            return func

        return decorate


#: The registry ``@task`` fills; the worker runs the handlers it holds.
default_registry = Registry()


@overload
def task(name: F, /) -> F: ...


@overload
def task(
    name: str | None = None, /, *, timeout: float | None = None, process: bool = False
) -> Callable[[F], F]: ...


def task(
    name: str | F | None = None, /, *, timeout: float | None = None, process: bool = False
) -> Any:
    """Registers a function as the handler of a command.

    Used bare (``@task``) the command is the function's name; ``@task("resize_image")`` names it.
    The function receives the task's JSON payload and returns a JSON-serialisable result. If its
    signature asks for it (a second parameter, a parameter named ``context``, or one annotated
    :class:`TaskContext`), it also receives the running attempt's context.

    Args:
        name: The command name, or the function when used bare.
        timeout: Seconds after which an attempt fails with ``timeout``, when the task itself sets
            no timeout.
        process: Run the handler in a child process. Use it for CPU-bound or untrusted code: a
            timeout, cancellation or shutdown then really stops it (a thread cannot be killed).
            The function must be importable by module and name.

    Returns:
        The function, unchanged, or a decorator.

    Raises:
        ValueError: Another function is already registered under the name.
        TypeError: The function cannot take a payload.

    Example:
        >>> @task("add")
        ... def add(payload, context):
        ...     context.logger.info("adding")
        ...     return payload["a"] + payload["b"]
    """
    if callable(name):
        return default_registry.task()(name)
    return default_registry.task(name, timeout=timeout, process=process)

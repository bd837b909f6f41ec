"""numpydoc sections written once and filled into the docstrings of every function or class that shares them.

``@documented(shared, returns=..., name=(type, text), ...)`` appends a Parameters section (and a Returns section)
to the docstring: every parameter of the signature, in order (``self`` left out), described by the decorator's own
entries or else by the ``shared`` table.  A parameter that neither describes raises at import, so a docstring
cannot miss a parameter its signature has; Sphinx's PR02 check catches the opposite.
"""
from __future__ import annotations

import inspect
import textwrap
from typing import Any, Callable, Dict, Optional, Tuple, TypeVar

Entry = Tuple[str, str]  # (type, description)
F = TypeVar("F", bound=Callable[..., Any])


def _entry(name: str, entry: Entry) -> str:
    kind, text = entry
    body = textwrap.fill(" ".join(text.split()), 112, initial_indent="    ", subsequent_indent="    ")
    return f"{name} : {kind}\n{body}"


def _split_sections(doc: str) -> Tuple[str, str]:
    """(the text before the docstring's first numpydoc section, the sections): the generated ones go between."""
    lines = doc.split("\n")
    for i in range(len(lines) - 1):
        if lines[i].strip() and set(lines[i + 1].strip()) == {"-"} and len(lines[i + 1].strip()) >= 3:
            return "\n".join(lines[:i]).rstrip(), "\n".join(lines[i:])
    return doc, ""


def documented(shared: Dict[str, Entry], returns: Optional[Entry] = None, **own: Entry) -> Callable[[F], F]:
    """Appends the Parameters (and Returns) sections to the decorated function's or class's docstring."""
    def wrap(obj: F) -> F:
        if inspect.isclass(obj):  # the constructor's parameters (a named tuple's are its __new__'s fields)
            target = obj.__new__ if hasattr(obj, "_fields") else obj.__init__  # type: ignore[misc]
        else:
            target = obj
        params = inspect.signature(target).parameters
        names = [n for n in params if n not in ("self", "cls", "_cls")]
        stars = {n: {inspect.Parameter.VAR_POSITIONAL: "*", inspect.Parameter.VAR_KEYWORD: "**"}.get(p.kind, "")
                 for n, p in params.items()}  # numpydoc names *args and **kwargs with their stars
        missing = [n for n in names if n not in own and n not in shared]
        if missing:
            raise TypeError(f"{obj.__qualname__}: no description of parameter(s) {', '.join(missing)}")
        unknown = set(own) - set(names)
        if unknown:
            raise TypeError(f"{obj.__qualname__}: described parameter(s) it does not have: {', '.join(unknown)}")
        if "Parameters\n    ----------" in (obj.__doc__ or "") or "Parameters\n----------" in (obj.__doc__ or ""):
            raise TypeError(f"{obj.__qualname__}: its docstring has a Parameters section already")
        head, tail = _split_sections(inspect.cleandoc(obj.__doc__ or ""))
        entries = "\n".join(_entry(stars[n] + n, own.get(n) or shared[n]) for n in names)
        parts = [head, "Parameters\n----------\n" + entries]
        if returns is not None:
            parts.append("Returns\n-------\n" + _entry("result", returns).split(" : ", 1)[1])
        obj.__doc__ = "\n\n".join(p for p in parts + [tail] if p)
        return obj
    return wrap

"""The error taxonomy: every failure hal reports is a HalError that says what, where and what to do
(and ``a_or_an``, the article its messages put before a type name)."""

from __future__ import annotations


def a_or_an(word: str) -> str:
    """``word`` with its indefinite article, by its sound as read out: "an int", "an int8 array", "a
    float", "a uint8 array" (you-int), "a NoneType", "an ndarray", "an 8-bit"."""
    w = word.lower()
    vowel = w[:1] in ("a", "e", "i", "o", "8") or (w[:1] == "u" and not w.startswith(("uint", "uni", "us", "ut")))
    if w.startswith(("nd", "np")) and w[:3] not in ("non", "nod"):
        vowel = True  # ndarray, nparray: read letter by letter, "en-dee"
    return f"{'an' if vowel else 'a'} {word}"


class HalError(Exception):
    """Base of every error hal raises on purpose.

    ``what`` is the failure, ``where`` the place (file, node, plugin, feed), ``hint``
    what the user can do about it. ``str(err)`` joins the three into one line.
    """

    def __init__(self, what: str, *, where: str | None = None, hint: str | None = None):
        self.what = what
        self.where = where
        self.hint = hint
        super().__init__(self._message())

    def _message(self) -> str:
        parts = [self.what if self.where is None else f"{self.where}: {self.what}"]
        if self.hint:
            parts.append(self.hint)
        return " — ".join(parts)

    def add_hint(self, more: str) -> None:
        """Add ``more`` to what the user can do (after the hint there is, if any)."""
        self.hint = more if not self.hint else f"{self.hint}; {more}"
        self.args = (self._message(),)

    def within(self, outer: str) -> None:
        """Say this happened inside ``outer`` (the node running the body that failed): ``where``
        becomes "outer > where"."""
        if self.where is None or not self.where.startswith(outer):
            self.where = outer if self.where is None else f"{outer} > {self.where}"
            self.args = (self._message(),)


class ModelError(HalError):
    """The model file or proto is unreadable, invalid, or unsafe (e.g. an external-data path)."""


class InputError(HalError):
    """What the user passed is wrong: a feed missing, extra, or of the wrong dtype, rank or shape; a
    command-line value; a profile or manifest file the user named."""


class UnsupportedOpError(HalError):
    """A node has no kernel, or a target refuses it and fallback is 'error'."""

    def __init__(self, what: str, *, where: str | None = None, hint: str | None = None,
                 nodes: list[tuple[str, str, str]] | None = None):
        #: (node name, op type, reason) for every refused node
        self.nodes = nodes or []
        super().__init__(what, where=where, hint=hint)


class CompileError(HalError):
    """A target could not lower the graph (bad option, inconsistent graph, internal limit)."""


class ResourceError(CompileError):
    """The program does not fit: memory, chips, wafers or an allowed bound; carries the numbers."""


class PluginError(HalError):
    """A plugin failed to import, register, declare a valid spec, or misbehaved in a hook."""

    def __init__(self, what: str, *, plugin: str, distribution: str | None = None,
                 hint: str | None = None):
        self.plugin = plugin
        self.distribution = distribution
        where = f"plugin {plugin!r}" + (f" (distribution {distribution!r})" if distribution else "")
        super().__init__(what, where=where, hint=hint)


__all__ = [
    "CompileError",
    "HalError",
    "InputError",
    "ModelError",
    "PluginError",
    "ResourceError",
    "UnsupportedOpError",
]


class RunError(HalError):
    """A kernel failed while running: names the node, its op and the shapes it was given."""


__all__ += ["RunError"]

"""What the host checks about the recipe's plugins, and how a failing hook is reported.

- `check_plugins`: the recipe's plugins support its objective, find what they
  require, conflict with none of the others, and their declared order has no
  cycle. ``LanguageModel.__init__`` calls it, so an incompatible recipe stops
  before any data is read or tokenized.
- `run_order`: the order in which the host calls the plugins' hooks at each
  stage: recipe order, with a plugin moved only as far as a ``runs_after``/
  ``runs_before`` declaration demands.
- `hook_guard`: an exception from a plugin's hook is re-raised with the plugin's
  class, recipe key and distribution in front of its message; the new exception
  is still an instance of the original's type (``except ValueError`` keeps
  working) and chains the original as its ``__cause__``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

from lmforge.core.hooks import STAGE_OF
from lmforge.core.plugins import Objective, Plugin, class_names, declared, metadata_problems, objective_task
from lmforge.core.registry import RECIPE_KEYS, describe, registry

#: How a recipe provides the requirements the host knows (see ``Plugin.requires``); any other name must come
#: from a plugin's ``provides``.
REQUIREMENT_HINTS = {
    "teacher": "a distiller in the recipe (model.distiller), which provides the teacher",
    "labels": "an objective that trains on labeled examples (layout 'padded', e.g. SequenceClassification)",
}



class PluginError(Exception):
    """A plugin's hook raised; the message names the plugin, its recipe key and distribution.

    Instances are made by `plugin_error` as a subclass of both this class and
    the original exception's type.
    """

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class PluginCompatibilityError(ValueError):
    """The recipe combines plugins that cannot work together (or with its objective)."""


_WRAPPED_TYPES: dict[type, type] = {}  # original exception type -> its PluginError subclass


def plugin_error(exc: BaseException, message: str) -> BaseException:
    """A `PluginError` carrying ``message`` that is also of ``exc``'s type (a plain one where that cannot be)."""
    cls = type(exc)
    try:
        wrapped = _WRAPPED_TYPES.get(cls)
        if wrapped is None:
            wrapped = type(cls.__name__, (PluginError, cls), {"__module__": cls.__module__,
                                                               "__qualname__": cls.__qualname__})
            _WRAPPED_TYPES[cls] = wrapped
        # __new__ without __init__: exception classes with their own __init__ signature still work.
        error = wrapped.__new__(wrapped, message)
        error.args = (message,)
        error.__dict__.update(getattr(exc, "__dict__", {}))
        return error
    except Exception:  # a type that cannot be subclassed (a C extension's, say)
        return PluginError(message)


@contextlib.contextmanager
def hook_guard(plugin: Plugin, hook: str) -> Iterator[None]:
    """Re-raise an exception from ``plugin``'s ``hook`` naming the plugin (see the module docstring)."""
    try:
        yield
    except PluginError:
        raise
    except Exception as exc:
        stage = STAGE_OF.get(hook, "")
        message = (f"Plugin {describe(plugin)} failed in {hook}{f' ({stage} stage)' if stage else ''}: "
                   f"{type(exc).__name__}: {exc}")
        raise plugin_error(exc, message) from exc


# -- the recipe ------------------------------------------------------------------------------------


def check_plugins(objective: Objective, plugins: Sequence[tuple[str, Plugin]]) -> None:
    """Refuse a recipe whose plugins cannot work with its objective or with each other.

    Args:
        objective: The recipe's objective (``model.objective``).
        plugins: ``(recipe key, plugin)`` for every other plugin, in recipe order.

    Raises:
        PluginCompatibilityError: naming the plugin(s), their recipe keys and distributions.
    """
    RECIPE_KEYS[objective] = "model.objective"
    for key, plugin in plugins:
        RECIPE_KEYS[plugin] = key
    everything = [objective, *(p for _, p in plugins)]
    for plugin in everything:
        problems = metadata_problems(type(plugin))
        if problems:
            raise PluginCompatibilityError(f"{describe(plugin)}: {'; '.join(problems)}. Fix the plugin's class.")
    names = set(class_names(objective)) | {objective_task(objective)}
    for _, plugin in plugins:
        supported = plugin.supported_objectives
        if supported is not None and not names & set(supported):
            raise PluginCompatibilityError(
                f"{describe(plugin)} supports the objectives {', '.join(supported)}, not "
                f"{type(objective).__name__} (task {objective_task(objective)}). Remove it from the recipe or "
                f"change model.objective."
            )
    _check_conflicts(everything)
    _check_requirements(objective, everything)
    run_order([p for _, p in plugins])


def _matches(plugin: Plugin, names: Sequence[str]) -> bool:
    return bool(set(class_names(plugin)) & set(names))


def _check_conflicts(plugins: list[Plugin]) -> None:
    for a in plugins:
        for b in plugins:
            if a is not b and _matches(b, a.conflicts_with):
                raise PluginCompatibilityError(
                    f"{describe(a)} cannot be combined with {describe(b)}: {type(a).__name__} declares "
                    f"conflicts_with={tuple(a.conflicts_with)!r}. Remove one of them from the recipe."
                )


def _check_requirements(objective: Objective, plugins: list[Plugin]) -> None:
    provided = {"hidden_states"}  # the forward pass returns them on request
    if getattr(objective, "layout", None) == "padded":
        provided.add("labels")
    for plugin in plugins:
        provided |= set(plugin.provides)
    for plugin in plugins:
        missing = sorted(set(plugin.requires) - provided)
        if missing:
            need = missing[0]
            how = REQUIREMENT_HINTS.get(need) or _providers_hint(need)
            raise PluginCompatibilityError(
                f"{describe(plugin)} requires {need!r}, which this recipe does not provide. It needs {how}."
            )


def _providers_hint(need: str) -> str:

    providers = [i.name for i in registry().all() if i.cls is not None and need in i.cls.provides]
    if providers:
        return f"a plugin that provides it in the recipe: {', '.join(providers)}"
    return "a plugin that provides it, and no installed plugin does"


def run_order(plugins: Sequence[Plugin]) -> list[Plugin]:
    """The order in which the host calls ``plugins``' hooks: recipe order, adjusted to their declarations.

    A depth-first topological sort: going through the recipe order, a plugin is
    placed once every plugin it must follow (``runs_after``, or another's
    ``runs_before``) is placed: a plugin that must run first is pulled forward
    to just before the first plugin that needs it, and plugins without
    declarations keep their recipe order.

    Raises:
        PluginCompatibilityError: the declarations form a cycle; the message names its plugins.
    """
    plugins = list(plugins)
    after = [declared(p, "runs_after") for p in plugins]
    before_ = [declared(p, "runs_before") for p in plugins]
    if not any(after) and not any(before_):
        return plugins
    before: dict[int, list[tuple[int, str]]] = {i: [] for i in range(len(plugins))}  # i -> (j, reason): j before i
    for i, a in enumerate(plugins):
        for j, b in enumerate(plugins):
            if i == j:
                continue
            if _matches(b, after[i]):
                before[i].append((j, f"{type(a).__name__}.runs_after names {type(b).__name__}"))
            if _matches(a, before_[j]):
                before[i].append((j, f"{type(b).__name__}.runs_before names {type(a).__name__}"))
    order: list[int] = []
    state: dict[int, str] = {}
    stack: list[int] = []  # the plugins being visited; stack[k + 1] must run before stack[k] ...
    reasons: list[str] = []  # ... because of reasons[k]

    def visit(i: int) -> None:
        if state.get(i) == "done":
            return
        state[i] = "visiting"
        stack.append(i)
        for j, reason in sorted(before[i]):
            if state.get(j) == "visiting":
                k = stack.index(j)
                _refuse_cycle(plugins, stack[k:], [*reasons[k:], reason])
            reasons.append(reason)
            visit(j)
            reasons.pop()
        stack.pop()
        state[i] = "done"
        order.append(i)

    for i in range(len(plugins)):
        visit(i)
    return [plugins[i] for i in order]


def _refuse_cycle(plugins: list[Plugin], members: list[int], reasons: list[str]) -> None:
    names = ", ".join(describe(plugins[i]) for i in sorted(members))
    raise PluginCompatibilityError(
        f"the plugins {names} cannot run in the order they declare ({'; '.join(reasons)}): the declarations "
        "form a cycle. Remove one of them from the recipe."
    )

"""Faster Bokeh model construction and serialisation: memoisations of Bokeh's property machinery.

Most of a view's build time is not the view's data but Bokeh's per-model cost (benchmarks/README.md,
P6): about 157 models per view, each paying for its class's whole property table, on every model:

1. ``HasProps.__init__`` asks every property whether its default is *unstable* (a callable or a
   container, copied per instance) to fill those in, and every default lookup asks again
   (``PropertyDescriptor.has_unstable_default``). The answer depends on the class only; it is
   computed here once per class and property.
2. ``HasProps._overridden_defaults()`` walks the class's MRO and merges a dict on each default lookup;
   here once per class (the result is read only, by ``Property.themed_default``).
3. ``PropertyDescriptor.instance_default`` validates (``prepare_value``) a *stable* default on every
   lookup; an unthemed stable default of a class is the same validated value each time, computed here
   once per (class, property) and copied out as Bokeh copies it.
4. ``HasProps.query_properties_with_values(include_defaults=False)`` (what serialising a model calls)
   evaluates every property's value, defaults included, before it drops the ones that are not to be
   sent (``has_props.py``: "TODO: this should happen before get_value()"). Here only the properties
   that are sent are evaluated, plus those without a default (``Required``), so that an unset required
   property still raises ``UnsetValueError`` exactly as before.
5. ``bokeh.util.callback_manager._check_callback`` (every ``on_change``: Panel links each widget
   property so) computes the callback's ``inspect.signature``; a signature that passed is
   remembered per underlying function (with the number and names of the arguments a ``partial``
   binds, which is all the check depends on). A callback that fails is checked, and fails, each time.
6. ``ParameterizedProperty.__str__`` (``List(String)``, ``Dict(String, Any)``...), which container
   validation formats eagerly for its error message on every value, is computed once per property.
7. ``bokeh.model.util.visit_value_and_its_immediate_references`` (how Bokeh finds the models a model
   refers to: Panel's panes, adding a root and serialising each walk the whole document) makes one
   function call per item of every list, a data source's columns of strings included; here the
   strings and numbers in a list or dict are passed over in the loop itself (also where a changed
   property marks the models it now refers to). The models are visited in the same order.

The results are the same objects and the same JSON (``tests/test_bokeh_speedups.py`` compares every
view's serialised document with and without them); Bokeh's themes are honoured (a themed property
takes Bokeh's own path). Written for Bokeh 3.4-3.x (the functions replaced here are the same over
those versions); on another version, or if one of them is missing, nothing is patched. Installed on import of
:mod:`attnflows_panel.views`; ``ATTNFLOWS_BOKEH_SPEEDUPS=0`` leaves Bokeh untouched, and
:func:`uninstall` restores it. They speed any Bokeh document in the process, not only ours: the
whole view build (P6) takes about a third less.
"""

from __future__ import annotations

import logging
import os
from copy import copy
from typing import Any, Callable

log = logging.getLogger(__name__)

__all__ = ["install", "uninstall", "installed", "disabled"]

_ORIGINALS: dict[str, Any] = {}
_UNSTABLE: dict[type, tuple[str, ...]] = {}  # class -> names of its properties with unstable defaults
_OVERRIDES: dict[type, dict[str, Any]] = {}  # class -> its merged overridden defaults
_REQUIRED: dict[type, frozenset[str]] = {}  # class -> names of its properties without a default
_DEFAULTS: dict[tuple[type, str], tuple[bool, Any]] = {}  # (class, name) -> (stable, validated default)
_UNSTABLE_ONE: dict[tuple[type, str], bool] = {}  # (class, name) -> has_unstable_default
_CALLBACKS_OK: set[tuple] = set()  # callback signatures that passed _check_callback


def _callback_key(callback: Any) -> tuple | None:
    """What ``inspect.signature(callback)``'s count of required arguments depends on, or None."""
    import functools
    import types

    if isinstance(callback, functools.partial):
        inner = _callback_key(callback.func)
        return None if inner is None else ("partial", inner, len(callback.args), tuple(sorted(callback.keywords)))
    if isinstance(callback, types.MethodType):
        inner = _callback_key(callback.__func__)
        return None if inner is None else ("method", inner)
    if isinstance(callback, types.FunctionType) and not hasattr(callback, "__signature__") \
            and not hasattr(callback, "__wrapped__"):
        return ("function", callback)
    return None


def _supported() -> bool:
    try:
        import bokeh
        from bokeh.core.has_props import HasProps
        from bokeh.core.property.bases import ParameterizedProperty, Property
        from bokeh.core.property.descriptors import PropertyDescriptor
        from bokeh.model import util as model_util
        from bokeh.util import callback_manager
    except ImportError:  # pragma: no cover - bokeh is a dependency
        return False
    try:
        major, minor = (int(x) for x in bokeh.__version__.split(".")[:2])
    except ValueError:
        return False
    if major != 3 or minor < 4:
        return False
    needed = [(HasProps, "query_properties_with_values"), (HasProps, "_overridden_defaults"),
              (HasProps, "themed_values"), (PropertyDescriptor, "instance_default"),
              (PropertyDescriptor, "has_unstable_default"), (Property, "themed_default"),
              (callback_manager, "_check_callback"), (model_util, "visit_value_and_its_immediate_references"),
              (model_util, "visit_immediate_value_references")]
    return all(hasattr(owner, name) for owner, name in needed) and "__str__" in ParameterizedProperty.__dict__


def installed() -> bool:
    """Whether the speed-ups are in place."""
    return bool(_ORIGINALS)


def install() -> bool:
    """Put the speed-ups in place (idempotent). Returns whether they are installed: False when
    ``ATTNFLOWS_BOKEH_SPEEDUPS=0`` or when the installed Bokeh is not one they were written for."""
    if _ORIGINALS:
        return True
    if os.environ.get("ATTNFLOWS_BOKEH_SPEEDUPS", "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    if not _supported():
        log.debug("Bokeh speed-ups not installed: Bokeh version not supported")
        return False
    from bokeh.core.has_props import HasProps, Intrinsic, Undefined
    from bokeh.core.property.bases import ParameterizedProperty
    from bokeh.core.property.descriptors import PropertyDescriptor, UnsetValueError
    from bokeh.core.property.wrappers import PropertyValueContainer
    from bokeh.model import Model
    from bokeh.model import model as model_module
    from bokeh.model import util as model_util
    from bokeh.util import callback_manager

    orig_init = HasProps.__init__
    orig_overrides = HasProps.__dict__["_overridden_defaults"].__func__
    orig_query = HasProps.query_properties_with_values
    orig_instance_default = PropertyDescriptor.instance_default
    orig_has_unstable = PropertyDescriptor.has_unstable_default
    orig_check_callback = callback_manager._check_callback
    orig_str = ParameterizedProperty.__dict__["__str__"]
    orig_visit = model_util.visit_value_and_its_immediate_references
    scalars = frozenset((int, float, str))

    def visit_value_and_its_immediate_references(obj: Any, visitor: Callable[[Any], None]) -> None:
        # bokeh.model.util's, with the scalars of a container skipped in the loop (same visits, same order)
        typ = type(obj)
        if typ in scalars:
            return
        if typ is list or issubclass(typ, (list, tuple)):
            for item in obj:
                if type(item) not in scalars:
                    visit_value_and_its_immediate_references(item, visitor)
        elif issubclass(typ, dict):
            for key, value in obj.items():
                if type(key) not in scalars:
                    visit_value_and_its_immediate_references(key, visitor)
                if type(value) not in scalars:
                    visit_value_and_its_immediate_references(value, visitor)
        elif issubclass(typ, HasProps):
            if issubclass(typ, Model):
                visitor(obj)
            else:
                model_util.visit_immediate_value_references(obj, visitor)
        else:
            orig_visit(obj, visitor)  # dataclasses and everything else: Bokeh's own

    def _check_callback(callback: Any, fargs: Any, what: str = "Callback functions") -> None:
        key = _callback_key(callback)
        if key is not None:
            key = (key, tuple(fargs))
            if key in _CALLBACKS_OK:
                return
        orig_check_callback(callback, fargs, what)
        if key is not None:
            _CALLBACKS_OK.add(key)

    def __str__(self) -> str:
        text = self.__dict__.get("_attnflows_str")
        if text is None:
            text = self.__dict__["_attnflows_str"] = orig_str(self)
        return text

    def has_unstable_default(self, obj: Any) -> bool:
        key = (obj if isinstance(obj, type) else obj.__class__, self.name)
        unstable = _UNSTABLE_ONE.get(key)
        if unstable is None:
            unstable = _UNSTABLE_ONE[key] = orig_has_unstable(self, obj)
        return unstable

    def unstable_names(obj: Any) -> tuple[str, ...]:
        cls = type(obj)
        names = _UNSTABLE.get(cls)
        if names is None:
            names = _UNSTABLE[cls] = tuple(
                name for name in obj.properties(_with_props=True) if obj.lookup(name).has_unstable_default(obj))
        return names

    def __init__(self, **properties: Any) -> None:
        # HasProps.__init__ with the per-class list of unstable defaults (same order, same effect)
        super(HasProps, self).__init__()
        self._property_values = {}
        self._unstable_default_values = {}
        self._unstable_themed_values = {}
        for name, value in properties.items():
            if value is Undefined or value is Intrinsic:
                continue
            setattr(self, name, value)
        for name in unstable_names(self):
            if name not in properties:
                self.lookup(name)._get(self)  # fills in `_unstable_*_values`
        self._initialized = True

    def _overridden_defaults(cls) -> dict[str, Any]:
        merged = _OVERRIDES.get(cls)
        if merged is None:
            merged = _OVERRIDES[cls] = orig_overrides(cls)
        return merged

    def instance_default(self, obj: Any) -> Any:
        themed = obj.themed_values()
        if themed is not None and self.name in themed:
            return orig_instance_default(self, obj)
        key = (obj.__class__, self.name)
        entry = _DEFAULTS.get(key)
        if entry is None:
            if self.has_unstable_default(obj):
                entry = (False, None)
            else:
                entry = (True, self.property.themed_default(obj.__class__, self.name, None))
            _DEFAULTS[key] = entry
        if not entry[0]:
            return orig_instance_default(self, obj)
        return copy(entry[1])  # as Property._copy_default copies a stable default

    def required_names(obj: Any) -> frozenset[str]:
        cls = type(obj)
        names = _REQUIRED.get(cls)
        if names is None:
            overrides = cls._overridden_defaults()
            names = _REQUIRED[cls] = frozenset(
                name for name in obj.properties(_with_props=True)
                if (overrides[name] if name in overrides else obj.lookup(name).property._default) is Undefined)
        return names

    def query_properties_with_values(self, query: Callable[[Any], bool], *, include_defaults: bool = True,
                                     include_undefined: bool = False) -> dict[str, Any]:
        if include_defaults:
            return orig_query(self, query, include_defaults=include_defaults, include_undefined=include_undefined)
        # HasProps.query_properties_with_values evaluating only what it returns (and what may raise)
        selected = set(self._property_values.keys()) | set(self._unstable_default_values.keys())
        themed_keys: set[str] = set()
        themed = self.themed_values()
        if themed is not None:
            themed_keys = set(themed.keys())
            selected |= themed_keys
        required = required_names(self)
        result: dict[str, Any] = {}
        for key in self.properties(_with_props=True):
            if key not in selected and key not in required:
                continue
            descriptor = self.lookup(key)
            if not query(descriptor):
                continue
            try:
                value = descriptor.get_value(self)
            except UnsetValueError:
                if include_undefined:
                    value = Undefined
                else:
                    raise
            else:
                if key not in selected:
                    continue
                if key not in themed_keys and isinstance(value, PropertyValueContainer) \
                        and key in self._unstable_default_values:
                    continue
            result[key] = value
        return result

    _ORIGINALS.update(init=orig_init, overrides=HasProps.__dict__["_overridden_defaults"], query=orig_query,
                      instance_default=orig_instance_default, has_unstable=orig_has_unstable,
                      check_callback=orig_check_callback, str=orig_str, visit=orig_visit)
    HasProps.__init__ = __init__
    HasProps._overridden_defaults = classmethod(_overridden_defaults)
    HasProps.query_properties_with_values = query_properties_with_values
    PropertyDescriptor.instance_default = instance_default
    PropertyDescriptor.has_unstable_default = has_unstable_default
    callback_manager._check_callback = _check_callback
    ParameterizedProperty.__str__ = __str__
    model_util.visit_value_and_its_immediate_references = visit_value_and_its_immediate_references
    model_module.visit_value_and_its_immediate_references = visit_value_and_its_immediate_references  # its import
    return True


def uninstall(clear: bool = True) -> None:
    """Restore Bokeh's own functions (and, with ``clear``, drop what was remembered: it stays valid, as
    it depends on the classes only, so :class:`disabled` keeps it for when the speed-ups come back)."""
    if not _ORIGINALS:
        return
    from bokeh.core.has_props import HasProps
    from bokeh.core.property.descriptors import PropertyDescriptor

    HasProps.__init__ = _ORIGINALS["init"]
    HasProps._overridden_defaults = _ORIGINALS["overrides"]
    HasProps.query_properties_with_values = _ORIGINALS["query"]
    PropertyDescriptor.instance_default = _ORIGINALS["instance_default"]
    PropertyDescriptor.has_unstable_default = _ORIGINALS["has_unstable"]
    from bokeh.core.property.bases import ParameterizedProperty
    from bokeh.util import callback_manager

    callback_manager._check_callback = _ORIGINALS["check_callback"]
    ParameterizedProperty.__str__ = _ORIGINALS["str"]
    from bokeh.model import model as model_module
    from bokeh.model import util as model_util

    model_util.visit_value_and_its_immediate_references = _ORIGINALS["visit"]
    model_module.visit_value_and_its_immediate_references = _ORIGINALS["visit"]
    _ORIGINALS.clear()
    if clear:
        for cache in (_UNSTABLE, _OVERRIDES, _REQUIRED, _DEFAULTS, _UNSTABLE_ONE, _CALLBACKS_OK):
            cache.clear()


class disabled:
    """``with disabled(): ...`` runs Bokeh's own functions, then puts the speed-ups back if they were
    installed (tests and benchmarks compare both)."""

    def __enter__(self):
        self._was = installed()
        uninstall(clear=False)
        return self

    def __exit__(self, *exc):
        if self._was:
            install()
        return False

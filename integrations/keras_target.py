"""What policies may change in a Keras 3 model: weights, and per-layer learning rates through a
``keras.optimizers.MultiOptimizer`` (Keras >= 3.15): the Keras
:class:`~ww_callbacks.policies.Target`, used by the Keras integration; also importable as
``ww_callbacks.policies.KerasTarget`` / ``ww_callbacks.policies.multi_optimizer_per_layer``.

Weights are read and written back through the layout pairs of
:mod:`ww_callbacks.layers.keras_models` (:func:`~ww_callbacks.layers.keras_models.layer_row` reads
a layer as the analysis does, :func:`~ww_callbacks.layers.keras_models.from_analysis_layout` is its
inverse); what stays here is the Keras-private part: the kernel *variable* behind a layer and the
variable-to-sub-optimizer assignment of a ``MultiOptimizer``.

Keras has no param groups: one optimizer updates every variable with one learning rate. Since
Keras 3.15, ``MultiOptimizer(OptimizerMap(...))`` hands each variable to a sub-optimizer chosen by
its ``variable.path``; :func:`multi_optimizer_per_layer` builds one with a sub-optimizer per
watched layer, and :class:`KerasTarget` sets each sub-optimizer's learning rate to its base value
times the layer's multiplier (:class:`~ww_callbacks.policies.LayerLRBalancer`).

Learning rates: only sub-optimizers with a *float* learning rate can be scaled (its variable is
assigned ``base * multiplier``). A sub-optimizer that follows a ``LearningRateSchedule`` (or a
callable) is refused with a ``ValueError`` naming the layer: its value is computed inside the
compiled train step from the schedule's own constants, which a callback cannot change on every
backend without adding variables to the optimizer (that would break loading its checkpoints).
Keras's ``LearningRateScheduler`` and ``ReduceLROnPlateau`` callbacks cannot drive a
``MultiOptimizer`` either (it refuses ``learning_rate``), so with per-layer learning rates the
schedule is yours to apply to the sub-optimizers' bases.

The JAX backend keeps the training state outside the model's variables during ``fit``; it is
synced back when a callback reads ``callback.model``. The integration therefore gives the target
a ``get_model`` function that does that, and the target calls it only when it reads or writes
values, i.e. only when a policy has something to do.

Keras is imported lazily, inside the functions.
"""

from __future__ import annotations

import re
import warnings
import weakref
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from ww_callbacks.layers import LayerWeights, select_layers
from ww_callbacks.layers.keras_models import (
    WRITABLE_KINDS,
    from_analysis_layout,
    keras_layers,
    layer_kind,
    layer_row,
    walk_layers,
    weight_attr,
)

#: Base learning rate of each sub-optimizer, set by :func:`multi_optimizer_per_layer` (the
#: template's learning rate) or the first time a :class:`KerasTarget` scales it. Kept per
#: optimizer object, so that a second fit (a new target) does not take a scaled rate as its base.
_BASE_LR: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

_UPGRADE = ("per-layer learning rates in Keras need keras.optimizers.MultiOptimizer, which "
            "Keras {version} lacks: upgrade to Keras >= 3.15 (pip install -U keras)")


def _multi_optimizer_class() -> type:
    """``keras.optimizers.MultiOptimizer``; ``RuntimeError`` telling to upgrade when absent."""
    import keras

    cls = getattr(keras.optimizers, "MultiOptimizer", None)
    if cls is None:
        raise RuntimeError(_UPGRADE.format(version=keras.__version__))
    return cls


def _watched(model: Any, layers: Any, min_evals: int, max_evals: int,
             max_N: int) -> dict[str, tuple[int, Any]]:
    """``{longname: (layer_id, keras layer)}`` of the layers the watcher analyses with these
    options, in the order of the analysis (longnames as ``keras_models.keras_layers`` makes
    them)."""
    found, _ = keras_layers(model)
    kept, _ = select_layers(found, layers, min_evals=min_evals, max_evals=max_evals, max_N=max_N)
    names = {layer.longname for layer in kept}
    objects = {}
    for _, longname, layer in walk_layers(model):
        name = longname or str(getattr(layer, "name", ""))
        if name in names and name not in objects:
            objects[name] = layer
    return {layer.longname: (layer.layer_id, objects[layer.longname]) for layer in kept
            if layer.longname in objects}


def _layer_variables(layers: Mapping[str, Any]) -> dict[str, list[Any]]:
    """The trainable variables of each layer (kernel and bias; LoRA factors when enabled). A
    variable reached from two layers belongs to the first."""
    taken: set[int] = set()
    out: dict[str, list[Any]] = {}
    for name, layer in layers.items():
        own = [v for v in layer.trainable_variables if id(v) not in taken]
        taken.update(id(v) for v in own)
        out[name] = own
    return out


def _unwrap(optimizer: Any) -> Any:
    """The optimizer inside a ``LossScaleOptimizer`` (mixed precision), else itself."""
    inner = getattr(optimizer, "inner_optimizer", None)
    return inner if inner is not None else optimizer


def _refuse_schedule(optimizer: Any, what: str) -> None:
    """``ValueError`` when a sub-optimizer's learning rate is not a plain (float) variable."""
    lr = getattr(optimizer, "_learning_rate", None)
    if not hasattr(lr, "assign"):
        raise ValueError(
            f"ww_callbacks: the sub-optimizer of {what} follows a "
            f"{type(lr).__name__} learning rate, which cannot be scaled during fit: give "
            "multi_optimizer_per_layer (or your MultiOptimizer) an optimizer with a float "
            "learning_rate")


def _current_lr(optimizer: Any, what: str) -> float:
    """The float learning rate of a sub-optimizer; ``ValueError`` for a schedule/callable."""
    import keras

    _refuse_schedule(optimizer, what)
    return float(np.asarray(keras.ops.convert_to_numpy(optimizer.learning_rate)))


def _regex_for(paths: list[str]) -> str:
    """An ``OptimizerMap`` key matching exactly these variable paths (``re.fullmatch``)."""
    return "(?:" + "|".join(re.escape(p) for p in paths) + ")"


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", text)


def _clone(optimizer: Any, name: str | None = None) -> Any:
    """A fresh, unbuilt optimizer of the same class and configuration (schedule included)."""
    config = optimizer.get_config()
    if name is not None:
        config["name"] = name
    return optimizer.__class__.from_config(config)


def multi_optimizer_per_layer(model: Any, make_optimizer: Callable[[], Any] | Any, *,
                              layers: Any = None, min_evals: int = 8, max_evals: int = 15000,
                              max_N: int = 50000, name: str | None = None) -> Any:
    """A ``keras.optimizers.MultiOptimizer`` with a sub-optimizer of its own for each watched
    layer (its kernel and bias, matched by their exact variable paths), and a default one for
    every other variable, so that :class:`~ww_callbacks.policies.LayerLRBalancer` can give each
    layer its own learning rate::

        model.compile(optimizer=multi_optimizer_per_layer(model, keras.optimizers.AdamW(1e-3)),
                      loss=...)
        model.fit(..., callbacks=[WeightWatcherCallback(policies=[LayerLRBalancer()])])

    ``make_optimizer``: a function returning a new optimizer, or an optimizer used as a template
    (cloned with ``from_config(get_config())`` for each layer and for the default; the instance
    itself is not used). ``layers`` and the limits select the layers as the watcher does: give
    the callback the same ones. ``name``: the MultiOptimizer's name. The model must be built.
    Needs Keras >= 3.15 (``RuntimeError`` otherwise). A learning-rate *schedule* is cloned too,
    but :class:`KerasTarget` cannot scale it (see the module docstring). What an optimizer's
    config does not hold is not cloned (``exclude_from_weight_decay(...)`` calls): pass a
    function that makes each optimizer fully configured instead.
    """
    import keras

    multi_cls = _multi_optimizer_class()
    optimizer_map_cls = keras.optimizers.OptimizerMap
    if not getattr(model, "built", False) or not model.trainable_variables:
        raise ValueError("ww_callbacks: build the model first (give it an Input or call it on "
                         "a batch): its variables are mapped to the sub-optimizers by path")
    if isinstance(make_optimizer, keras.optimizers.Optimizer):
        template = make_optimizer

        def make(sub_name: str | None) -> Any:
            return _clone(template, sub_name)
    elif callable(make_optimizer):
        def make(sub_name: str | None) -> Any:
            return make_optimizer()
    else:
        raise TypeError("make_optimizer must be a keras optimizer or a function returning one, "
                        f"not {type(make_optimizer).__name__}")

    watched = _watched(model, layers, min_evals, max_evals, max_N)
    per_layer = _layer_variables({n: layer for n, (_, layer) in watched.items()})
    paths: dict[str, int] = {}
    for variable in model.trainable_variables:
        paths[variable.path] = paths.get(variable.path, 0) + 1
    default = make(None)
    made = {id(default)}
    optimizer_map = optimizer_map_cls(default_optimizer=default)
    for longname, variables in per_layer.items():
        if not variables:
            continue  # frozen layer: nothing to optimise
        shared = [v.path for v in variables if paths.get(v.path, 0) > 1]
        if shared:
            raise ValueError(f"ww_callbacks: variable path(s) {shared} of layer {longname} are "
                             "not unique in the model, so a MultiOptimizer cannot tell them "
                             "apart; give the layers unique names")
        sub = make(f"{type(default).__name__.lower()}_{_safe_name(longname)}")
        if not isinstance(sub, keras.optimizers.Optimizer) or id(sub) in made:
            raise TypeError("make_optimizer must return a new keras optimizer at each call")
        made.add(id(sub))
        lr = getattr(sub, "_learning_rate", None)
        if hasattr(lr, "assign"):  # a float learning rate: remember it as the base
            _BASE_LR[sub] = float(np.asarray(keras.ops.convert_to_numpy(lr)))
        optimizer_map[_regex_for([v.path for v in variables])] = sub
    return multi_cls(optimizer_map, name=name)


class KerasTarget:
    """A Keras 3 model (and its optimizer) as policies may change them.

    ``layers`` and the limits select the watched layers (as the watcher does). ``get_model``: a
    function returning the model, called before each read or write of its values (the Keras
    callback passes one reading ``callback.model``, which syncs the JAX backend's training
    state); default: the model itself.

    - Weights: :meth:`get_state` / :meth:`set_state` are ``model.get_weights()`` (host copies) /
      ``model.set_weights``. :meth:`set_layer_weight` writes ``Dense``, ``EinsumDense`` (the
      projections of ``MultiHeadAttention`` included), ``Embedding`` and (transposed)
      convolution kernels back, undoing the layout of the analysis; LoRA-enabled and quantized
      layers are refused with a ``ValueError`` (their effective weight is not one variable).
    - Learning rates: :meth:`lr_layers` are the watched layers whose variables all go to one
      sub-optimizer of a ``MultiOptimizer`` (``model.optimizer``, possibly inside a
      ``LossScaleOptimizer``) that serves no other watched layer and is not the default one
      (:func:`multi_optimizer_per_layer` builds such an optimizer). :meth:`set_lr_scales` sets
      that sub-optimizer's learning rate to ``base * scale``; ``base`` is the template's learning
      rate for optimizers made by :func:`multi_optimizer_per_layer`, else the sub-optimizer's
      learning rate the first time it is scaled (so change a base by building a new optimizer).
      With any other optimizer :meth:`lr_layers` is empty (a warning says so once); on Keras
      older than 3.15 it raises ``RuntimeError``.
    """

    def __init__(self, model: Any, *, layers: Any = None, min_evals: int = 8,
                 max_evals: int = 15000, max_N: int = 50000,
                 get_model: Callable[[], Any] | None = None):
        self.model = model
        self._get_model = get_model
        watched = _watched(model, layers, min_evals, max_evals, max_N)
        self._layers = {name: layer for name, (_, layer) in watched.items()}
        self._ids = {name: layer_id for name, (layer_id, _) in watched.items()}
        self._lr_optimizers: dict[str, Any] | None = None
        self._warned = False

    def _live(self) -> Any:
        """The model with its current values in its variables (JAX: synced)."""
        return self._get_model() if self._get_model is not None else self.model

    # ------------------------------------------------------------------ weights

    def get_state(self) -> list[np.ndarray]:
        """Host copies of every weight of the model (``model.get_weights()``), trainable or not;
        the optimizer's state is not included (as Keras's ``EarlyStopping``)."""
        return [np.array(w, copy=True) for w in self._live().get_weights()]

    def set_state(self, state: list[np.ndarray]) -> None:
        """Put back weights from :meth:`get_state`."""
        self._live().set_weights(state)

    def layer_names(self) -> list[str]:
        """The watched layers."""
        return list(self._layers)

    def _layer(self, longname: str) -> Any:
        try:
            return self._layers[longname]
        except KeyError:
            raise ValueError(f"ww_callbacks: {longname!r} is not a watched layer") from None

    def layer_weight(self, longname: str) -> LayerWeights:
        """The current weight of one watched layer, read now, in the layout of the analysis."""
        layer = self._layer(longname)
        self._live()
        row = layer_row(layer, self._ids[longname], str(getattr(layer, "name", "")), longname)
        if not isinstance(row, LayerWeights):
            reason = getattr(row, "reason", "no weight to analyse")
            raise ValueError(f"ww_callbacks: {longname}: {reason}")
        return row

    def set_layer_weight(self, longname: str, weight: np.ndarray) -> None:
        """Overwrite one layer's kernel (or embedding table) with ``weight``, given in the layout
        of :meth:`layer_weight`; the variable keeps its dtype. ``ValueError`` for layers whose
        weight is not a single plain variable (LoRA, quantized, other kinds)."""
        import keras

        layer = self._layer(longname)
        kind = layer_kind(layer)
        cls = type(layer).__name__
        if kind not in WRITABLE_KINDS:
            raise ValueError(f"ww_callbacks: {longname}: cannot write the weight of a {cls}")
        mode = getattr(layer, "quantization_mode", None)
        if mode is not None:
            raise ValueError(f"ww_callbacks: {longname}: the {mode}-quantized weight of this {cls} "
                             "cannot be written back")
        if getattr(layer, "lora_enabled", False):
            raise ValueError(f"ww_callbacks: {longname}: a LoRA-enabled {cls} applies kernel + "
                             "A @ B; its effective weight cannot be written back")
        attr = weight_attr(kind)
        variable = getattr(layer, f"_{attr}", None)
        if variable is None:
            variable = getattr(layer, attr, None)
        if not isinstance(variable, keras.Variable):
            raise ValueError(f"ww_callbacks: {longname}: the {attr} of this {cls} is not a "
                             "variable")
        value = from_analysis_layout(layer, np.asarray(weight), tuple(variable.shape))
        self._live()
        variable.assign(_cast(value, variable.dtype))

    # ------------------------------------------------------------------ learning rates

    def _optimizers_by_layer(self) -> dict[str, Any] | None:
        """``{layer: sub-optimizer}`` for the layers :meth:`lr_layers` lists, or None when the
        MultiOptimizer cannot tell yet (a function map, not built)."""
        import keras

        multi_cls = _multi_optimizer_class()
        optimizer = _unwrap(getattr(self.model, "optimizer", None))
        if not isinstance(optimizer, multi_cls):
            if not self._warned and optimizer is not None:
                self._warned = True
                warnings.warn(
                    "ww_callbacks: per-layer learning rates need a keras.optimizers."
                    f"MultiOptimizer with a sub-optimizer per layer, not {type(optimizer).__name__}"
                    "; build one with ww_callbacks.policies."
                    "multi_optimizer_per_layer(model, optimizer)", stacklevel=3)
            return {}
        subs = list(optimizer.optimizers)
        index = getattr(optimizer, "_var_to_optimizer_idx", None)
        mapping = getattr(optimizer, "_optimizer_map", None)
        default = getattr(mapping, "default_optimizer", None)

        def sub_of(variable: Any) -> Any:
            if optimizer.built and index:
                i = index.get(optimizer._var_key(variable))
                return None if i is None else subs[i]
            try:
                return mapping[variable.path]
            except ValueError:  # the path matches several keys: Keras will refuse it too
                return None

        if not (optimizer.built and index) and not isinstance(mapping,
                                                              keras.optimizers.OptimizerMap):
            return None
        owner: dict[str, Any] = {}
        for longname, variables in _layer_variables(self._layers).items():
            found = {id(s): s for s in (sub_of(v) for v in variables)}
            if len(found) == 1:
                sub = next(iter(found.values()))
                if sub is not None and sub is not default:
                    owner[longname] = sub
        count: dict[int, int] = {}
        for sub in owner.values():
            count[id(sub)] = count.get(id(sub), 0) + 1
        return {name: sub for name, sub in owner.items() if count[id(sub)] == 1}

    def lr_layers(self) -> list[str]:
        """Watched layers with a sub-optimizer of their own (see the class docstring)."""
        if self._lr_optimizers is None:
            found = self._optimizers_by_layer()
            if found is None:
                return []
            self._lr_optimizers = found
        return [name for name in self._layers if name in self._lr_optimizers]

    def set_lr_scales(self, scales: Mapping[str, float]) -> None:
        """Set the learning rate of each listed layer's sub-optimizer to ``base * scale``.
        ``ValueError`` when a sub-optimizer's learning rate is a schedule."""
        self.lr_layers()
        owners = self._lr_optimizers or {}
        todo = [(name, owners[name], float(s)) for name, s in scales.items() if name in owners]
        if not todo:
            return
        self._live()  # JAX: sync, so the assignment is what the next step reads
        for name, sub, scale in todo:
            base = _BASE_LR.get(sub)
            if base is None:
                base = _BASE_LR[sub] = _current_lr(sub, name)
            _refuse_schedule(sub, name)
            sub.learning_rate = base * scale

    def learning_rates(self) -> dict[str, float]:
        """``{layer: learning rate}`` of each layer of :meth:`lr_layers` (for logs and tests)."""
        self.lr_layers()
        self._live()
        return {name: _current_lr(sub, name) for name, sub in (self._lr_optimizers or {}).items()}


def _cast(value: np.ndarray, dtype: str) -> Any:
    """``value`` in a variable's dtype (numpy when numpy knows it, e.g. not bfloat16)."""
    try:
        return value.astype(np.dtype(dtype), copy=False)
    except TypeError:
        import keras

        return keras.ops.cast(value.astype(np.float32, copy=False), dtype)

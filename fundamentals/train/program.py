"""The compiled training step, its scans over chunks of batches, and the one training state they carry.

The body of the book's loop (`model(features)`, `F.cross_entropy`, `loss.backward()`,
`optimizer.step()`) as one pure function of a `TrainState` and a batch, compiled three ways:
one step, a `lax.scan` of the step over a stack of batches, and the same scan over batches
gathered on the device from data that lives there. Which compiled program runs is decided by
`cache.compile_cached`, from the program JAX traces now.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh
from jax.typing import ArrayLike

from .. import _small_dots
from ..losses import cross_entropy
from ..sharding import Placement, local_copy
from . import cache

__all__ = ["TrainState", "TrainProgram"]

# What the engine trains: an Equinox model, or `(model, state)` for a stateful one (BatchNorm).
Model = Any


class TrainState(NamedTuple):
    """Everything a training run carries from one step to the next, as one pytree of arrays.

    The compiled functions of `TrainProgram` take a `TrainState` and return the next one; its
    fields are flat lists of arrays (flattened by JAX in C++, where an Equinox module would be
    flattened through Python callbacks on every call, a cost comparable to the book's step).

    **Fields:**

    - `params`: the model's floating-point arrays (what the optimizer updates), in tree order.
    - `opt_state`: the optimizer state's arrays.
    - `model_state`: the model's own state between steps (running statistics); empty for a
      model without any.
    - `step`: steps taken so far (int32). Step `s` of a model that takes a `key` (dropout)
      gets `jax.random.fold_in(jax.random.key(seed), s)`.
    - `seed`: the run's seed (uint32).
    """

    params: list
    opt_state: list
    model_state: list
    step: Any
    seed: Any


def _takes_key(model) -> bool:
    try:
        return "key" in inspect.signature(model).parameters
    except (TypeError, ValueError):
        return False


def as_transformation(optimizer) -> optax.GradientTransformation:
    """`optimizer` as a `GradientTransformation`; `optax.MultiSteps` (gradient accumulation) is one through its method."""
    if isinstance(optimizer, optax.GradientTransformation):
        return optimizer
    if isinstance(optimizer, optax.MultiSteps):
        return optimizer.gradient_transformation()
    raise TypeError(
        "optimizer must be an optax.GradientTransformation (e.g. optax.sgd(0.5)) or an optax.MultiSteps, "
        f"got {type(optimizer).__name__}"
    )


def split_model(model) -> tuple[Any, Any]:
    """`(model, state)` for a stateful model as `eqx.nn.make_with_state` returns it; `(model, None)` otherwise."""
    if isinstance(model, tuple) and len(model) == 2 and isinstance(model[1], eqx.nn.State):
        return model[0], model[1]
    return model, None


def _hyperparameter_states(tree) -> list:
    """The nodes of an optimizer state that carry hyperparameters or a plateau scale, in tree order."""
    nodes = jax.tree_util.tree_leaves(
        tree, is_leaf=lambda node: hasattr(node, "hyperparams") or type(node).__name__ == "ReduceLROnPlateauState"
    )
    return [node for node in nodes if hasattr(node, "hyperparams") or type(node).__name__ == "ReduceLROnPlateauState"]


def recorded_rates(opt_state) -> dict[str, Any]:
    """What an optimizer state says of its learning rate: `inject_hyperparams`' value, a plateau's scale."""
    rates: dict[str, Any] = {}
    for node in _hyperparameter_states(opt_state):
        hyperparams = getattr(node, "hyperparams", None)
        if isinstance(hyperparams, dict) and "learning_rate" in hyperparams and "learning_rate" not in rates:
            rates["learning_rate"] = hyperparams["learning_rate"]
        if type(node).__name__ == "ReduceLROnPlateauState" and "lr_scale" not in rates:
            rates["lr_scale"] = node.scale
    return rates


def _signature(tree) -> tuple:
    """Shapes, dtypes and weak types of the arrays in a batch: which compiled variant it needs."""
    return tuple(
        (
            np.shape(leaf),
            leaf.dtype if hasattr(leaf, "dtype") else np.result_type(leaf),
            getattr(leaf, "weak_type", False),
        )
        for leaf in jax.tree_util.tree_leaves(tree)
    )


class TrainProgram:
    """The compiled training step of one model, optimizer and loss, in its three forms, and its evaluation.

    `fit` is built on it; use it directly to write your own loop at `fit`'s speed:

    ```python
    program = TrainProgram.create(model, optax.sgd(0.5))
    state = program.init(model, seed=0)                       # a TrainState
    state, out = program.step(state, (X, y))                  # one step on one batch; out["loss"]
    state, out = program.chunk(state, (Xs, ys))               # lax.scan over Xs: (steps, batch, ...)
    state, out = program.gather_chunk(state, (X_all, y_all), indices)  # batches X_all[indices[k]]
    sums = program.evaluate(state, (Xs, ys))                  # loss, accuracy and metric sums, no gradient
    model = program.model(state)
    ```

    - `step(state, (X, y))`: one step; `out["loss"]` a scalar, and `out["learning_rate"]`
      (`out["lr_scale"]`) when the optimizer state carries it (`optax.inject_hyperparams`,
      `optax.contrib.reduce_on_plateau`).
    - `chunk(state, (Xs, ys))`: `lax.scan` of the step over a stack of batches, bit for bit
      the same as that many `step`s; each output has one entry a step.
    - `gather_chunk(state, (X_all, y_all), indices)`: the same, with the batches gathered on
      the device as `X_all[indices[k]]` (`indices`: `(num_steps, batch)`), so that data put on
      the device once is not sent again.
    - `evaluate(state, (Xs, ys))` / `evaluate_gather(state, data, indices)`: the model in
      inference mode over a stack of batches: sums of the loss (times each batch's size), of
      correct predictions and of each metric, and the number of examples.

    Each form is traced once per distinct batch shape (with the Python code as it is at that
    moment) and compiled only if this process has not compiled the same program before: the
    process-wide cache (`fundamentals.train.cache`) is keyed on the traced program itself, so
    a new model and a new `optax.sgd(0.5)` of the same shapes reuse an earlier compile, while
    anything that changes what is computed compiles anew.

    A stateful model (`(model, state)` from `eqx.nn.make_with_state`, with `BatchNorm`) is
    written for one example, as in Equinox's examples, and called as
    `jax.vmap(model, axis_name="batch", in_axes=(0, None), out_axes=(0, None))(X, state)`:
    give its `BatchNorm` layers `axis_name="batch"`. Its state travels in
    `TrainState.model_state`.
    """

    def __init__(
        self,
        model: Model,
        optimizer: optax.GradientTransformation,
        loss_fn: Callable[[jax.Array, jax.Array], jax.Array] = cross_entropy,
        mesh: Mesh | None = None,
        metrics: dict[str, Callable] | None = None,
        fuse_small_dots: bool = True,
    ):
        model, model_state = split_model(model)
        optimizer = as_transformation(optimizer)
        params, self._static = eqx.partition(model, eqx.is_inexact_array)
        self._params_def = jax.tree_util.tree_structure(params)
        opt_shapes = jax.eval_shape(optimizer.init, params)
        self._opt_state_def = jax.tree_util.tree_structure(opt_shapes)
        self.records = ("loss", *recorded_rates(opt_shapes))  # what each step reports
        self.stateful = model_state is not None
        self._model_state_def = jax.tree_util.tree_structure(model_state)
        self.optimizer = optimizer
        self.loss_fn = loss_fn
        self.metrics = dict(metrics or {})
        self.takes_key = _takes_key(model)
        self.placement = Placement(mesh)
        device = mesh.devices.flat[0] if mesh is not None else jax.local_devices()[0]
        # On a CPU, small products as fused multiply-and-sum; the one step both the scan and `step` run.
        self.fuses_small_dots = bool(fuse_small_dots) and device.platform == "cpu"
        self._largest_matrix = max(
            (leaf.size for leaf in jax.tree_util.tree_leaves(params) if leaf.ndim >= 2), default=0
        )
        self._step_fn = (
            _small_dots.fuse_small_dots(self._train_step, platform=device.platform)
            if self.fuses_small_dots
            else self._train_step
        )
        self._compiled: dict[tuple, Any] = {}  # batch signature -> jax.stages.Compiled
        self.programs_compiled = 0  # how many of this program's variants had to be compiled

    @classmethod
    def create(
        cls,
        model: Model,
        optimizer: optax.GradientTransformation,
        *,
        loss_fn: Callable[[jax.Array, jax.Array], jax.Array] = cross_entropy,
        mesh: Mesh | None = None,
        metrics: dict[str, Callable] | None = None,
        fuse_small_dots: bool = True,
    ) -> TrainProgram:
        """The program that trains `model` with `optimizer` and `loss_fn`.

        **Arguments:**

        - `model`: an Equinox model, or `(model, state)` for a stateful one; its structure and
          non-array fields are used here, its arrays only through `init`.
        - `optimizer`: an Optax `GradientTransformation`, or an `optax.MultiSteps`.
        - `loss_fn`: `loss_fn(logits, labels) -> scalar`.
        - `mesh`: a mesh with a `"data"` axis for data-parallel steps, or None.
        - `metrics`: `{name: fn(logits, labels) -> scalar}`, summed by `evaluate`.
        - `fuse_small_dots`: on a CPU, compile the step's small matrix products as fused
          multiply-and-sum (`fundamentals._small_dots`): the book's network's step takes half
          the time. The sums then run in another order than XLA's `dot`, so results differ
          from a plain `jax.jit` step by float32 rounding; False keeps XLA's products.
        """
        return cls(model, optimizer, loss_fn, mesh, metrics, fuse_small_dots)

    @staticmethod
    def clear_cache() -> None:
        """Forget every compiled program of this process; the next `fit` compiles anew."""
        cache.clear()

    @property
    def programs_run(self) -> int:
        """How many distinct compiled programs (forms and batch shapes) this program has run."""
        return len(self._compiled)

    # --- the state ---------------------------------------------------------------------------

    def init(self, model: Model, seed: int = 0) -> TrainState:
        """The `TrainState` of `model` (or `(model, state)`) before its first step: its arrays and a fresh optimizer state."""
        model, model_state = split_model(model)
        params = eqx.filter(model, eqx.is_inexact_array)
        return TrainState(
            params=jax.tree_util.tree_leaves(params),
            opt_state=jax.tree_util.tree_leaves(self.optimizer.init(params)),
            model_state=jax.tree_util.tree_leaves(model_state),
            step=np.int32(0),
            seed=np.uint32(seed % 2**32),
        )

    def model(self, state: TrainState) -> Model:
        """The model whose arrays are `state.params` (and `(model, model_state)` for a stateful one)."""
        params = jax.tree_util.tree_unflatten(self._params_def, local_copy(state.params))
        model = eqx.combine(params, self._static)
        if self.stateful:
            return model, jax.tree_util.tree_unflatten(self._model_state_def, local_copy(state.model_state))
        return model

    def trees(self, state: TrainState) -> tuple[Model, Any]:
        """`(model, opt_state)` as pytrees, this process's copy: what a checkpoint stores."""
        opt_state = jax.tree_util.tree_unflatten(self._opt_state_def, local_copy(state.opt_state))
        return self.model(state), opt_state

    def with_trees(self, state: TrainState, model: Model, opt_state: Any, step: int) -> TrainState:
        """`state` with the arrays of `model` (or `(model, model_state)`), `opt_state` and the step count `step`."""
        model, model_state = split_model(model)
        return state._replace(
            params=jax.tree_util.tree_leaves(eqx.filter(model, eqx.is_inexact_array)),
            opt_state=jax.tree_util.tree_leaves(opt_state),
            model_state=jax.tree_util.tree_leaves(model_state) if self.stateful else state.model_state,
            step=np.int32(step),
        )

    # --- the computation ---------------------------------------------------------------------

    def _forward(self, params, model_state, X, key, inference: bool = False):
        """`(logits, new_model_state)` of the model with `params` on the batch `X`."""
        model = eqx.combine(params, self._static)
        if inference:
            model = eqx.nn.inference_mode(model)
        kwargs = {} if (inference or not self.takes_key) else {"key": key}
        if not self.stateful:
            return model(X, **kwargs), model_state
        tree = jax.tree_util.tree_unflatten(self._model_state_def, model_state)
        if kwargs:  # one key per example, as NeuralNetwork draws its dropout masks
            keys = jax.random.split(key, X.shape[0])
            mapped = jax.vmap(
                lambda x, s, k: model(x, s, key=k), axis_name="batch", in_axes=(0, None, 0), out_axes=(0, None)
            )
            logits, tree = mapped(X, tree, keys)
        else:
            logits, tree = jax.vmap(model, axis_name="batch", in_axes=(0, None), out_axes=(0, None))(X, tree)
        return logits, jax.tree_util.tree_leaves(tree)

    def _train_step(self, state: TrainState, batch) -> tuple[TrainState, dict]:
        X, y = batch
        params = jax.tree_util.tree_unflatten(self._params_def, state.params)
        opt_state = jax.tree_util.tree_unflatten(self._opt_state_def, state.opt_state)
        # A fresh key every step, a pure function of the run's seed and the step.
        key = jax.random.fold_in(jax.random.key(state.seed), state.step) if self.takes_key else None

        def compute_loss(p):
            logits, model_state = self._forward(p, state.model_state, X, key)
            return self.loss_fn(logits, y), model_state

        (loss, model_state), grads = jax.value_and_grad(compute_loss, has_aux=True)(params)
        if isinstance(self.optimizer, optax.GradientTransformationExtraArgs):
            # reduce_on_plateau reads value=, lbfgs value=, grad= and value_fn=; the others ignore them.
            updates, opt_state = self.optimizer.update(
                grads, opt_state, params, value=loss, grad=grads, value_fn=lambda p: compute_loss(p)[0]
            )
        else:
            updates, opt_state = self.optimizer.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        outputs = {"loss": loss, **recorded_rates(opt_state)}
        new_state = state._replace(
            params=jax.tree_util.tree_leaves(params),
            opt_state=jax.tree_util.tree_leaves(opt_state),
            model_state=model_state,
            step=state.step + 1,
        )
        return new_state, outputs

    def _scan(self, state: TrainState, batches) -> tuple[TrainState, dict]:
        # A step whose products were all fused runs faster with two steps per loop iteration (the
        # loop's own per-iteration cost halves); bit for bit the same results either way.
        first = jax.tree_util.tree_leaves(batches)[0]
        batch = first.shape[1] if first.ndim > 1 else 1
        small = self.fuses_small_dots and batch * self._largest_matrix <= _small_dots.MAX_ELEMENTS
        return jax.lax.scan(self._step_fn, state, batches, unroll=2 if small else 1)

    def _gathered(self, data, indices):
        batches = tuple(array[indices] for array in data)
        if self.placement.mesh is not None:  # gathered rows stay on the devices whose indices they are
            batches = jax.lax.with_sharding_constraint(batches, self.placement.stacked)
        return batches

    def _gather_scan(self, state: TrainState, data, indices) -> tuple[TrainState, dict]:
        return self._scan(state, self._gathered(data, indices))

    def _evaluate(self, state: TrainState, batches) -> dict:
        """Sums over a stack of batches, in inference mode: loss x size, correct, metrics x size, count."""
        params = jax.tree_util.tree_unflatten(self._params_def, state.params)

        def one_batch(sums, batch):
            X, y = batch
            logits, _ = self._forward(params, state.model_state, X, None, inference=True)
            size = jnp.asarray(y.shape[0] if y.ndim else 1, jnp.float32)
            new = {"count": size, "loss": self.loss_fn(logits, y).astype(jnp.float32) * size}
            if jnp.issubdtype(y.dtype, jnp.integer) and logits.ndim == y.ndim + 1:
                new["correct"] = jnp.sum(jnp.argmax(logits, axis=-1) == y).astype(jnp.float32)
            for name, metric in self.metrics.items():
                new["metric." + name] = jnp.asarray(metric(logits, y), jnp.float32) * size
            sums = new if sums is None else jax.tree_util.tree_map(jnp.add, sums, new)
            return sums, None

        first = jax.tree_util.tree_map(lambda a: a[0], batches)
        rest = jax.tree_util.tree_map(lambda a: a[1:], batches)
        sums, _ = one_batch(None, first)
        sums, _ = jax.lax.scan(one_batch, sums, rest)
        return sums

    def _evaluate_gather(self, state: TrainState, data, indices) -> dict:
        return self._evaluate(state, self._gathered(data, indices))

    def _shardings(self, kind: str) -> dict:
        """`jax.jit`'s shardings for each form: the state replicated, batches split along `"data"`."""
        placement = self.placement
        if placement.mesh is None:
            return {}
        state, stacked = placement.replicated, placement.stacked
        inputs = {
            "step": (state, placement.batch),
            "chunk": (state, stacked),
            "gather": (state, placement.replicated, stacked),
            "evaluate": (state, stacked),
            "evaluate_gather": (state, placement.replicated, stacked),
        }[kind]
        outputs = placement.replicated if kind.startswith("evaluate") else (state, placement.replicated)
        return {"in_shardings": inputs, "out_shardings": outputs}

    def _run(self, kind: str, function: Callable, *args):
        signature = (kind, _signature(args[1:]))
        compiled = self._compiled.get(signature)
        if compiled is None:
            where = self.placement.mesh if self.placement.mesh is not None else jax.local_devices()[0]
            jitted = jax.jit(function, **self._shardings(kind))
            compiled, new = cache.compile_cached(jitted, *args, context=(kind, where))
            self.programs_compiled += int(new)
            self._compiled[signature] = compiled
        return compiled(*args)

    def step(self, state: TrainState, batch: tuple[ArrayLike, ...]) -> tuple[TrainState, dict[str, jax.Array]]:
        """One training step on `batch = (X, y)`: `(next_state, outputs)`, `outputs["loss"]` a scalar."""
        return self._run("step", self._step_fn, state, batch)

    def chunk(self, state: TrainState, batches: tuple[ArrayLike, ...]) -> tuple[TrainState, dict[str, jax.Array]]:
        """`lax.scan` of the step over `batches = (Xs, ys)`, steps first: `(next_state, outputs)`, one entry a step."""
        return self._run("chunk", self._scan, state, batches)

    def gather_chunk(
        self, state: TrainState, data: tuple[jax.Array, ...], indices: ArrayLike
    ) -> tuple[TrainState, dict[str, jax.Array]]:
        """The scan over batches `tuple(a[indices[k]] for a in data)`, gathered on the device."""
        return self._run("gather", self._gather_scan, state, data, indices)

    def evaluate(self, state: TrainState, batches: tuple[ArrayLike, ...]) -> dict[str, jax.Array]:
        """Sums over a stack of batches `(Xs, ys)` in inference mode (see the class docstring)."""
        return self._run("evaluate", self._evaluate, state, batches)

    def evaluate_gather(
        self, state: TrainState, data: tuple[jax.Array, ...], indices: ArrayLike
    ) -> dict[str, jax.Array]:
        """The same over batches gathered on the device as `tuple(a[indices[k]] for a in data)`."""
        return self._run("evaluate_gather", self._evaluate_gather, state, data, indices)

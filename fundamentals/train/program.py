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
import numpy as np
import optax

from ..losses import cross_entropy
from ..sharding import Placement, local_copy
from . import cache

__all__ = ["TrainState", "TrainProgram"]


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
    """The compiled training step of one model, optimizer and loss, in its three forms.

    `fit` is built on it; use it directly to write your own loop at `fit`'s speed:

    ```python
    program = TrainProgram.create(model, optax.sgd(0.5))
    state = program.init(model, seed=0)                       # a TrainState
    state, loss = program.step(state, (X, y))                 # one step on one batch
    state, losses = program.chunk(state, (Xs, ys))            # lax.scan over Xs: (steps, batch, ...)
    state, losses = program.gather_chunk(state, (X_all, y_all), indices)  # batches X_all[indices[k]]
    model = program.model(state)
    ```

    - `step(state, (X, y))`: one step, the loss a scalar.
    - `chunk(state, (Xs, ys))`: `lax.scan` of the step over a stack of batches, bit for bit
      the same as that many `step`s.
    - `gather_chunk(state, (X_all, y_all), indices)`: the same, with the batches gathered on
      the device as `X_all[indices[k]]` (`indices`: `(num_steps, batch)`), so that data put on
      the device once is not sent again.

    Each form is traced once per distinct batch shape (with the Python code as it is at that
    moment) and compiled only if this process has not compiled the same program before: the
    process-wide cache (`fundamentals.train.cache`) is keyed on the traced program itself, so
    a new model and a new `optax.sgd(0.5)` of the same shapes reuse an earlier compile, while
    anything that changes what is computed compiles anew.
    """

    def __init__(
        self,
        model,
        optimizer: optax.GradientTransformation,
        loss_fn: Callable[[jax.Array, jax.Array], jax.Array] = cross_entropy,
        mesh=None,
    ):
        params, self._static = eqx.partition(model, eqx.is_inexact_array)
        self._params_def = jax.tree_util.tree_structure(params)
        self._opt_state_def = jax.tree_util.tree_structure(jax.eval_shape(optimizer.init, params))
        self.optimizer = optimizer
        self.loss_fn = loss_fn
        self.takes_key = _takes_key(model)
        self.placement = Placement(mesh)
        self._compiled: dict[tuple, Any] = {}  # batch signature -> jax.stages.Compiled
        self.programs_compiled = 0  # how many of this program's variants had to be compiled

    @classmethod
    def create(
        cls,
        model,
        optimizer: optax.GradientTransformation,
        *,
        loss_fn: Callable[[jax.Array, jax.Array], jax.Array] = cross_entropy,
        mesh=None,
    ) -> TrainProgram:
        """The program that trains `model` with `optimizer` and `loss_fn`.

        **Arguments:**

        - `model`: an Equinox model; its structure and non-array fields are used here, its
          arrays only through `init`.
        - `optimizer`: an Optax `GradientTransformation`.
        - `loss_fn`: `loss_fn(logits, labels) -> scalar`.
        - `mesh`: a mesh with a `"data"` axis for data-parallel steps, or None.
        """
        return cls(model, optimizer, loss_fn, mesh)

    @staticmethod
    def clear_cache() -> None:
        """Forget every compiled program of this process; the next `fit` compiles anew."""
        cache.clear()

    @property
    def programs_run(self) -> int:
        """How many distinct compiled programs (forms and batch shapes) this program has run."""
        return len(self._compiled)

    # --- the state ---------------------------------------------------------------------------

    def init(self, model, seed: int = 0) -> TrainState:
        """The `TrainState` of `model` before its first step: its arrays and a fresh optimizer state."""
        params = eqx.filter(model, eqx.is_inexact_array)
        return TrainState(
            params=jax.tree_util.tree_leaves(params),
            opt_state=jax.tree_util.tree_leaves(self.optimizer.init(params)),
            model_state=[],
            step=np.int32(0),
            seed=np.uint32(seed % 2**32),
        )

    def model(self, state: TrainState):
        """The model whose arrays are `state.params`, with the other fields of the model this program was made for."""
        params = jax.tree_util.tree_unflatten(self._params_def, local_copy(state.params))
        return eqx.combine(params, self._static)

    def trees(self, state: TrainState):
        """`(model, opt_state)` as pytrees, this process's copy: what a checkpoint stores."""
        opt_state = jax.tree_util.tree_unflatten(self._opt_state_def, local_copy(state.opt_state))
        return self.model(state), opt_state

    def with_trees(self, state: TrainState, model, opt_state, step: int) -> TrainState:
        """`state` with the arrays of `model` and `opt_state` (a checkpoint's) and the step count `step`."""
        return state._replace(
            params=jax.tree_util.tree_leaves(eqx.filter(model, eqx.is_inexact_array)),
            opt_state=jax.tree_util.tree_leaves(opt_state),
            step=np.int32(step),
        )

    # --- the computation ---------------------------------------------------------------------

    def _train_step(self, state: TrainState, batch) -> tuple[TrainState, jax.Array]:
        X, y = batch
        params = jax.tree_util.tree_unflatten(self._params_def, state.params)
        opt_state = jax.tree_util.tree_unflatten(self._opt_state_def, state.opt_state)
        static, loss_fn = self._static, self.loss_fn

        def compute_loss(p):
            model = eqx.combine(p, static)
            if self.takes_key:
                # A fresh key every step, a pure function of the run's seed and the step.
                logits = model(X, key=jax.random.fold_in(jax.random.key(state.seed), state.step))
            else:
                logits = model(X)
            return loss_fn(logits, y)

        loss, grads = jax.value_and_grad(compute_loss)(params)
        updates, opt_state = self.optimizer.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        new_state = state._replace(
            params=jax.tree_util.tree_leaves(params),
            opt_state=jax.tree_util.tree_leaves(opt_state),
            step=state.step + 1,
        )
        return new_state, loss

    def _scan(self, state: TrainState, batches) -> tuple[TrainState, jax.Array]:
        return jax.lax.scan(self._train_step, state, batches)

    def _gather_scan(self, state: TrainState, data, indices) -> tuple[TrainState, jax.Array]:
        batches = tuple(array[indices] for array in data)
        if self.placement.mesh is not None:  # gathered rows stay on the devices whose indices they are
            batches = jax.lax.with_sharding_constraint(batches, self.placement.stacked)
        return self._scan(state, batches)

    def _shardings(self, kind: str) -> dict:
        """`jax.jit`'s shardings for each form: the state replicated, batches split along `"data"`."""
        placement = self.placement
        if placement.mesh is None:
            return {}
        state = placement.replicated
        inputs = {
            "step": (state, placement.batch),
            "chunk": (state, placement.stacked),
            "gather": (state, placement.replicated, placement.stacked),
        }[kind]
        return {"in_shardings": inputs, "out_shardings": (state, placement.replicated)}

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

    def step(self, state: TrainState, batch) -> tuple[TrainState, jax.Array]:
        """One training step on `batch = (X, y)`: `(next_state, loss)`."""
        return self._run("step", self._train_step, state, batch)

    def chunk(self, state: TrainState, batches) -> tuple[TrainState, jax.Array]:
        """`lax.scan` of the step over `batches = (Xs, ys)`, steps first: `(next_state, losses)`."""
        return self._run("chunk", self._scan, state, batches)

    def gather_chunk(self, state: TrainState, data, indices) -> tuple[TrainState, jax.Array]:
        """The scan over batches `tuple(a[indices[k]] for a in data)`, gathered on the device."""
        return self._run("gather", self._gather_scan, state, data, indices)

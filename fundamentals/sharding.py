"""Devices and data-parallel sharding (appendix A.9): where arrays live, and how a batch is split.

==========================================================  =========================================================
PyTorch                                                     JAX (this module)
==========================================================  =========================================================
``torch.device("cuda" if cuda.is_available() else "cpu")``  ``default_device()``
``tensor.to(device)`` / ``model.to(device)``                ``to_device(tree, device)``
``DistributedDataParallel(model)``                          parameters replicated: ``replicated_sharding(mesh)``
``DistributedSampler`` splits the batch per GPU             batch sharded over devices: ``batch_sharding(mesh)``
the process group (``world_size`` GPUs)                     ``data_mesh()``: a 1-D mesh named ``"data"``
==========================================================  =========================================================

**One program drives many devices.** PyTorch's DDP runs one process per GPU and averages
gradients with an all-reduce hook. In JAX one process drives all of its local devices: put the
batch on `batch_sharding(mesh)`, the model on `replicated_sharding(mesh)`, and the same jitted
train step becomes data-parallel; XLA inserts the all-reduce of the gradients itself. With
several processes (see `launch`), `jax.devices()` lists the devices of *every* process, a mesh
spans them all, and each process feeds only its own rows of the global batch (`shard_batch`,
built on `jax.make_array_from_process_local_data`).

Devices in JAX: an array created without a device (`jnp.ones(3)`, a NumPy input) is
*uncommitted* and follows the arrays it meets. An array put on a device with
`jax.device_put(x, device)` (or `to_device`) is *committed*. Combining arrays committed to
two different devices raises `ValueError: Received incompatible devices for jitted
computation. Got argument x of add ... with device ids [0] ... and argument y ... with device
ids [1] ...`, JAX's version of PyTorch's `RuntimeError: Expected all tensors to be on the same
device`. JAX never copies silently between committed devices: move one side with
`to_device`. Arrays on the devices of one mesh are one array with a sharding, not a mix.

`Placement` is where `fit` puts batches, parameters and whole data sets: one device, or a mesh.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec, Sharding

from ._checks import is_int as _is_int

T = TypeVar("T")  # a pytree, returned with the same structure

__all__ = [
    "default_device",
    "to_device",
    "data_mesh",
    "batch_sharding",
    "replicated_sharding",
    "check_batch_size",
    "shard_batch",
    "Placement",
]

DATA_AXIS = "data"

# ---------------------------------------------------------------------------------------------
# One device
# ---------------------------------------------------------------------------------------------


def default_device() -> jax.Device:
    """The device computations should run on: the first GPU if there is one, else the CPU.

    ```python
    # PyTorch                                                      # JAX
    device = torch.device("cuda" if torch.cuda.is_available()      device = default_device()
                          else "cpu")
    ```

    This is the first *local* device of JAX's default backend, which JAX picks as TPU, then
    GPU, then CPU (set `JAX_PLATFORMS=cpu` to force the CPU). In a multi-process run it is a
    device of this process, never one of another process.

    **Returns:**

    A `jax.Device`, for example `CudaDevice(id=0)` or `CpuDevice(id=0)`.
    """
    return jax.local_devices()[0]


_PLATFORM_ALIASES = {"cuda": "gpu", "rocm": "gpu", "gpu": "gpu", "cpu": "cpu", "tpu": "tpu"}


def _resolve_device(device: Any) -> jax.Device | Sharding:
    if isinstance(device, (jax.Device, Sharding)):
        return device
    if not isinstance(device, str):
        raise TypeError(
            f"to_device: device must be a jax.Device, a jax.sharding.Sharding or a string such as "
            f"'cpu' or 'cuda:0', got {type(device).__name__}"
        )
    name, _, index_text = device.strip().lower().partition(":")
    if name not in _PLATFORM_ALIASES or (index_text and not index_text.isdigit()):
        raise ValueError(
            f"to_device: device {device!r} is not 'cpu', 'gpu', 'cuda', 'rocm' or 'tpu' with an optional ':index'"
        )
    platform = _PLATFORM_ALIASES[name]
    try:
        devices = jax.local_devices(backend=platform)
    except RuntimeError:
        available = sorted({d.platform for d in jax.local_devices()})
        raise ValueError(
            f"to_device: device {device!r} asks for a {platform!r} backend, but JAX has only {available}"
        ) from None
    index = int(index_text) if index_text else 0
    if index >= len(devices):
        raise ValueError(
            f"to_device: device {device!r} does not exist; this process has {len(devices)} {platform} device(s)"
        )
    return devices[index]


def to_device(tree: T, device: Any) -> T:
    """A copy of `tree` whose arrays live on `device`; other leaves are left as they are.

    ```python
    # PyTorch                          # JAX
    X = X.to(device)                   X = to_device(X, device)
    model = model.to(device)           model = to_device(model, device)
    ```

    PyTorch moves a model in place; here, as everywhere in JAX, the result is a new tree and
    the input is unchanged. The arrays of the result are *committed* to `device`: combining
    them with arrays committed to another device raises `ValueError: Received incompatible
    devices for jitted computation`, where PyTorch raises "Expected all tensors to be on the
    same device". Uncommitted inputs (NumPy arrays, `jnp.ones(...)`) follow them without
    complaint, so `model(X_numpy)` on a moved model runs on the model's device.

    **Arguments:**

    - `tree`: an array, an Equinox model, or any pytree of them. NumPy arrays are moved too;
      non-array leaves (Python numbers, strings, activation functions) stay as they are.
    - `device`: a `jax.Device` (`default_device()`, `jax.devices()[1]`), a PyTorch-style string
      (`"cpu"`, `"cuda"`, `"cuda:1"`, `"gpu"`, `"tpu"`: local devices of that platform), or a
      `jax.sharding.Sharding` (`replicated_sharding(mesh)` copies the tree to every device).
      A sharding over the devices of several processes takes `tree` as the *global* value,
      which must then be equal in every process (JAX checks; a `ValueError` here if not).

    **Returns:**

    A pytree of the same structure, its arrays on `device`.
    """
    target = _resolve_device(device)
    arrays, rest = eqx.partition(tree, eqx.is_array)
    try:
        moved = jax.device_put(arrays, target)
    except AssertionError as error:
        # JAX's check that a value put on devices of several processes is the same everywhere.
        raise ValueError(
            "to_device: device is a sharding that spans several processes, so every process must pass "
            "the same values (build the model from the same key on every rank; feed per-process data "
            f"with shard_batch instead): {str(error)[:300]}"
        ) from None
    return eqx.combine(moved, rest)


# ---------------------------------------------------------------------------------------------
# Many devices: a mesh, its shardings, and global batches
# ---------------------------------------------------------------------------------------------


def data_mesh(num_devices: int | None = None) -> Mesh:
    """A 1-D device mesh with one axis, `"data"`, for data-parallel training.

    The JAX counterpart of DDP's process group: the devices a global batch is split across.
    After `jax.distributed.initialize` (which `launch` calls), `jax.devices()` and so the mesh
    span the devices of every process.

    ```python
    mesh = data_mesh()                         # all devices, e.g. Mesh('data': 8)
    X = jax.device_put(X, batch_sharding(mesh))               # rows split across devices
    model = to_device(model, replicated_sharding(mesh))       # a full copy on each device
    ```

    The axis is `AxisType.Auto` (what `jax.sharding.Mesh` gives; `jax.make_mesh` defaults to
    `Explicit` in JAX 0.10): XLA then propagates the batch sharding through any model code
    without annotations, which is all data parallelism needs.

    **Arguments:**

    - `num_devices`: use the first `num_devices` of `jax.devices()`; `None` (default) uses all.

    **Returns:**

    A `jax.sharding.Mesh` of shape `{"data": num_devices}`.

    **Raises:**

    `ValueError` naming `num_devices` if it is below 1 or above the number of devices.
    """
    devices = jax.devices()
    if num_devices is None:
        num_devices = len(devices)
    if not _is_int(num_devices):
        raise TypeError(f"data_mesh: num_devices must be an int or None, got {type(num_devices).__name__}")
    if not 1 <= num_devices <= len(devices):
        raise ValueError(
            f"data_mesh: num_devices must be between 1 and the {len(devices)} available device(s) "
            f"({devices[0].platform}), got {num_devices}"
        )
    return jax.make_mesh((int(num_devices),), (DATA_AXIS,), axis_types=(AxisType.Auto,), devices=devices[:num_devices])


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """How a batch is laid out: its first (batch) axis split evenly across the `"data"` axis.

    `NamedSharding(mesh, P("data"))`. With 4 devices and a batch of 8, each device holds 2
    rows, as each GPU gets its slice of the batch from `DistributedSampler` in PyTorch's DDP.
    """
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def replicated_sharding(mesh: Mesh) -> NamedSharding:
    """A full copy on every device of `mesh`: how parameters and optimizer state are kept.

    `NamedSharding(mesh, P())`. DDP copies the model to each GPU at construction and keeps the
    copies equal by averaging gradients; a jitted step on replicated parameters and a sharded
    batch does the same, with the all-reduce inserted by XLA.
    """
    return NamedSharding(mesh, PartitionSpec())


def _num_data_devices(mesh: Mesh | int) -> int:
    if _is_int(mesh):
        return int(mesh)
    if not isinstance(mesh, Mesh):
        raise TypeError(f"mesh must be a jax.sharding.Mesh (see data_mesh), got {type(mesh).__name__}")
    return int(mesh.shape[DATA_AXIS]) if DATA_AXIS in mesh.shape else int(mesh.size)


def check_batch_size(global_batch_size: int, mesh: Mesh) -> int:
    """Check that a global batch splits evenly across the mesh; return the rows per device.

    **Arguments:**

    - `global_batch_size`: the batch size summed over all devices and processes (in
      PyTorch's DDP, the per-GPU `batch_size` times `world_size`).
    - `mesh`: the mesh from `data_mesh` (or the number of devices, an int).

    **Returns:**

    The number of rows each device gets.

    **Raises:**

    `ValueError` naming `global_batch_size` and listing sizes that work (multiples of the
    device count) if the device count does not divide it.
    """
    num_devices = _num_data_devices(mesh)
    if not _is_int(global_batch_size):
        raise TypeError(f"check_batch_size: global_batch_size must be an int, got {type(global_batch_size).__name__}")
    if global_batch_size < 1 or global_batch_size % num_devices:
        below = (global_batch_size // num_devices) * num_devices
        nearest = [str(size) for size in (below, below + num_devices) if size >= num_devices]
        examples = ", ".join(str(num_devices * k) for k in range(1, 5))
        raise ValueError(
            f"global_batch_size={global_batch_size} does not split evenly across {num_devices} devices: "
            f"use a multiple of {num_devices} ({examples}, ...); the nearest "
            + ("is " + nearest[0] if len(nearest) == 1 else "are " + " and ".join(nearest))
        )
    return global_batch_size // num_devices


def shard_batch(batch: T, mesh: Mesh) -> T:
    """Turn this process's rows of a batch into global arrays sharded over `mesh`.

    One process: the batch is the global batch, and this is `jax.device_put(batch,
    batch_sharding(mesh))`. Several processes: each passes its own rows (from a
    `DistributedSampler` with `rank=jax.process_index()`), and the result is one global array
    of `jax.process_count()` times as many rows, each row on a device of the process that
    supplied it (`jax.make_array_from_process_local_data`). Rows are in process order.

    **Arguments:**

    - `batch`: a pytree of host arrays (NumPy or JAX), each with the local rows on axis 0.
    - `mesh`: the mesh from `data_mesh`.

    **Returns:**

    The same pytree of `jax.Array`s with sharding `batch_sharding(mesh)`.

    **Raises:**

    `ValueError` (see `check_batch_size`) if the global batch does not split evenly.
    """
    sharding = batch_sharding(mesh)

    def put(array: Any) -> jax.Array:
        array = np.asarray(array)
        if array.ndim == 0:
            raise ValueError("shard_batch: every array in batch needs a batch axis, got a scalar")
        check_local_rows(array.shape[0], mesh, where="shard_batch: ")
        return _put_local_rows(array, sharding)

    return jax.tree_util.tree_map(put, batch)


def check_local_rows(rows: int, mesh: Mesh, *, where: str = "", hint: str = "") -> None:
    """Check that `rows` rows in each process make a global batch that splits across `mesh`.

    **Raises:** `ValueError` from `check_batch_size`, prefixed by `where`, naming the rows in
    each process when there are several, and followed by `hint`.
    """
    try:
        check_batch_size(rows * jax.process_count(), mesh)
    except ValueError as error:
        per = f" ({rows} rows in each of {jax.process_count()} processes)" if jax.process_count() > 1 else ""
        raise ValueError(f"{where}{error}{per}{hint}") from None


def _put_local_rows(array: np.ndarray, sharding: NamedSharding) -> jax.Array:
    """This process's rows as (its part of) a global array: a plain `device_put` in one process."""
    if jax.process_count() > 1:
        return jax.make_array_from_process_local_data(sharding, array)
    return jax.device_put(array, sharding)


def local_copy(tree: T) -> T:
    """The same pytree with every multi-process replicated array replaced by this process's copy."""

    def local(leaf: Any) -> Any:
        if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
            return jnp.asarray(leaf.addressable_shards[0].data)
        return leaf

    return jax.tree_util.tree_map(local, tree)


def host_copy(array: Any) -> np.ndarray:
    """A NumPy copy of an array, also of a replicated array that spans several processes."""
    if isinstance(array, jax.Array) and array.is_fully_addressable:
        return np.asarray(array)
    return np.asarray(local_copy(array))


@dataclass
class Placement:
    """Where `fit` puts batches, parameters and in-memory data sets: one device, or a data-parallel mesh.

    With a mesh, a batch is split along its `"data"` axis (a stack of batches, steps first,
    along its second axis), and parameters, optimizer state and whole data sets are replicated.
    """

    mesh: Any = None
    block_each_call: bool = False
    multi_process: bool = False

    def __post_init__(self) -> None:
        if self.mesh is not None:
            if DATA_AXIS not in self.mesh.axis_names:
                raise ValueError(
                    f"mesh must have a {DATA_AXIS!r} axis (see data_mesh), got axes {self.mesh.axis_names}"
                )
            self.batch = batch_sharding(self.mesh)
            # A stack of batches, steps first: the scan walks axis 0, each step's batch is split.
            self.stacked = NamedSharding(self.mesh, PartitionSpec(None, DATA_AXIS))
            self.replicated = replicated_sharding(self.mesh)
            self.multi_process = jax.process_count() > 1
            # Simulated CPU devices can deadlock XLA's all-reduce when many steps are queued.
            self.block_each_call = all(d.platform == "cpu" for d in self.mesh.devices.flat)

    def check_batch(self, local_batch_size: int) -> None:
        """Refuse a batch size the mesh cannot split, naming the sizes that work."""
        if self.mesh is not None:
            check_local_rows(local_batch_size, self.mesh, hint="; or drop_last=True to drop a ragged last batch")

    def replicate(self, tree: T) -> T:
        """Parameters, optimizer state and small arrays: a copy on every device of the mesh."""
        if self.mesh is None:
            return tree
        if self.multi_process:
            return jax.tree_util.tree_map(
                lambda x: jax.make_array_from_process_local_data(self.replicated, np.asarray(x), np.shape(x)), tree
            )
        return jax.device_put(tree, self.replicated)

    def put(self, array: np.ndarray, stacked: bool = False) -> np.ndarray | jax.Array:
        """Send a batch (or a stack of batches, steps first) to where the step runs."""
        if self.mesh is None:
            return array
        return _put_local_rows(array, self.stacked if stacked else self.batch)

    def put_data(self, arrays: tuple[np.ndarray, ...]) -> tuple[jax.Array, ...]:
        """A whole in-memory data set, on the device (on every device of a mesh)."""
        if self.mesh is None:
            return jax.device_put(arrays)
        return jax.device_put(arrays, self.replicated)

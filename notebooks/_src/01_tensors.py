# %% [markdown]
# # A.1–A.2 Tensors: PyTorch and JAX side by side
#
# This notebook follows sections A.1 and A.2 of the appendix. Each step shows the book's PyTorch
# cell, then the same step in JAX with `fundamentals`, then a cell that checks that both agree.
#
# PyTorch's three parts, as the book lists them in A.1.1, have JAX counterparts:
#
# | PyTorch | JAX |
# |---|---|
# | a tensor library (`torch.tensor`, GPU arrays) | `jax.numpy` and the immutable `jax.Array` |
# | automatic differentiation (autograd) | function transformations: `jax.grad`, `jax.jit`, `jax.vmap` |
# | a deep learning library (`torch.nn`, `torch.optim`) | Equinox modules and Optax optimizers |

# %%
import numpy as np
import torch
import jax
import jax.numpy as jnp
import fundamentals as fm
from fundamentals.testing import assert_same

torch.set_num_threads(1)
# Full float32 matrix products on every backend: GPUs default to TF32 in JAX, which would
# break the 1e-5 agreement with PyTorch checked below.
jax.config.update("jax_default_matmul_precision", "highest")

# %% [markdown]
# ## A.1.3 Which version, and is there a GPU?
#
# The book checks `torch.__version__` and `torch.cuda.is_available()`. JAX picks its backend
# by itself (TPU, then GPU, then CPU) and lists what it found in `jax.devices()`.

# %%
# PyTorch (the book)
print(torch.__version__)
print(torch.cuda.is_available())

# %%
# JAX
print(jax.__version__)
print(jax.default_backend(), jax.devices())

# %% [markdown]
# ## A.2.1 Scalars, vectors, matrices and tensors (listing A.1)
#
# Plain JAX makes an array with `jnp.array`. `fm.tensor` wraps it with PyTorch's dtype rules
# (section A.2.2): with 64-bit mode off, as here, both give the same arrays.

# %%
# PyTorch (the book)
tensor0d = torch.tensor(1)
tensor1d = torch.tensor([1, 2, 3])
tensor2d = torch.tensor([[1, 2], [3, 4]])
tensor3d = torch.tensor([[[1, 2], [3, 4]], [[5, 6], [7, 8]]])

# %%
# JAX, plain
tensor0d_jnp = jnp.array(1)
tensor1d_jnp = jnp.array([1, 2, 3])
tensor2d_jnp = jnp.array([[1, 2], [3, 4]])
tensor3d_jnp = jnp.array([[[1, 2], [3, 4]], [[5, 6], [7, 8]]])
print(tensor3d_jnp)

# %%
# JAX with fundamentals
tensor0d_jax = fm.tensor(1)
tensor1d_jax = fm.tensor([1, 2, 3])
tensor2d_jax = fm.tensor([[1, 2], [3, 4]])
tensor3d_jax = fm.tensor([[[1, 2], [3, 4]], [[5, 6], [7, 8]]])
print(tensor3d_jax)

# %%
# Check: the same numbers and shapes. The integer width differs (next section).
for ours, theirs in [(tensor0d_jax, tensor0d), (tensor1d_jax, tensor1d),
                     (tensor2d_jax, tensor2d), (tensor3d_jax, tensor3d)]:
    assert_same(ours, theirs, same_dtype=False)
    assert ours.ndim == theirs.ndim
for plain, ours in [(tensor0d_jnp, tensor0d_jax), (tensor1d_jnp, tensor1d_jax),
                    (tensor2d_jnp, tensor2d_jax), (tensor3d_jnp, tensor3d_jax)]:
    assert_same(plain, ours)  # jnp.array and fm.tensor agree, dtype included
print("same values and shapes")

# %% [markdown]
# ### Copies and shared memory
#
# A readers' notebook adds NumPy to listing A.1: `torch.tensor` copies a NumPy array, while
# `torch.from_numpy` shares its memory, so writing to the array changes the tensor.
#
# A `jax.Array` is **immutable** as far as JAX's own operations go: none of them writes into
# it. `fm.tensor` and `fm.from_numpy` always copy, so changing the NumPy array afterwards
# changes neither of them.
#
# JAX does not promise that it never shares a buffer, though. On the CPU, `jax.device_put`
# can use a NumPy array's memory without copying when it is suitably aligned, and a DLPack
# export (`torch.from_dlpack(x)`) hands out the array's own buffer, which the other library
# can write to. Copy first (`fm.from_numpy`, `jnp.array`) when the source will change.

# %%
# PyTorch
ary3d = np.array([[[1, 2], [3, 4]], [[5, 6], [7, 8]]])
tensor3d_2 = torch.tensor(ary3d)      # copies
tensor3d_3 = torch.from_numpy(ary3d)  # shares memory with ary3d
ary3d[0, 0, 0] = 999
print(tensor3d_2[0, 0, 0].item(), tensor3d_3[0, 0, 0].item())

# %%
# JAX
ary3d = np.array([[[1, 2], [3, 4]], [[5, 6], [7, 8]]])
tensor3d_2_jax = fm.tensor(ary3d)
tensor3d_3_jax = fm.from_numpy(ary3d)
ary3d[0, 0, 0] = 999
print(tensor3d_2_jax[0, 0, 0].item(), tensor3d_3_jax[0, 0, 0].item())

# %%
# Check: torch.tensor copied, torch.from_numpy shared; both JAX arrays are copies
assert tensor3d_2[0, 0, 0] == 1 and tensor3d_3[0, 0, 0] == 999
assert tensor3d_2_jax[0, 0, 0] == 1 and tensor3d_3_jax[0, 0, 0] == 1
assert_same(tensor3d_2_jax, tensor3d_2, same_dtype=False)  # int32 against int64: see A.2.2

# %%
# JAX: where a buffer *is* shared. A DLPack export gives PyTorch the JAX array's own memory.
shared_jax = jnp.array([1.0, 2.0, 3.0])
shared_torch = torch.from_dlpack(shared_jax)  # no copy
shared_torch[0] = 42.0                         # PyTorch writes into it ...
print(shared_jax)                              # ... and the "immutable" JAX array changed
# Whether jax.device_put aliases a NumPy array depends on the platform and the alignment of
# the array's memory, so copy explicitly when the NumPy array will be written to afterwards.

# %%
# Check: the write through DLPack is visible in JAX; fm.from_numpy's copy is not affected by writes
assert float(shared_jax[0]) == 42.0
assert_same(shared_jax, shared_torch)
source = np.arange(4.0, dtype=np.float32)
copied = fm.from_numpy(source)
source[0] = -1.0
assert float(copied[0]) == 0.0

# %% [markdown]
# ## A.2.2 Tensor data types
#
# Here is the one place where the two libraries differ by default. PyTorch turns Python ints
# into `int64`. JAX keeps numbers in at most 32 bits unless 64-bit mode is on
# (`jax.config.update("jax_enable_x64", True)`), so `fm.tensor` gives `int32`, and `int64`
# only with x64 on. The same goes for NumPy input: `ary3d` above was `int64` and became `int32`.
# Floats are `float32` in both libraries. Here `fm.tensor` and plain `jnp.array` part ways:
# with x64 on, `jnp.array([1.0])` is `float64`, while `fm.tensor`, like PyTorch, keeps `float32`.

# %%
# PyTorch (the book)
tensor1d = torch.tensor([1, 2, 3])
print(tensor1d.dtype)
floatvec = torch.tensor([1.0, 2.0, 3.0])
print(floatvec.dtype)
floatvec = tensor1d.to(torch.float32)
print(floatvec.dtype)

# %%
# JAX
tensor1d_jax = fm.tensor([1, 2, 3])
print(tensor1d_jax.dtype)
floatvec_jax = fm.tensor([1.0, 2.0, 3.0])
print(floatvec_jax.dtype)
floatvec_jax = tensor1d_jax.astype(jnp.float32)  # torch: .to(torch.float32)
print(floatvec_jax.dtype)
with jax.enable_x64(True):  # 64-bit mode, only inside the `with`
    tensor1d_x64 = fm.tensor([1, 2, 3])
    floats_x64, floats_x64_jnp = fm.tensor([1.0, 2.0]), jnp.array([1.0, 2.0])
print(tensor1d_x64.dtype, floats_x64.dtype, floats_x64_jnp.dtype)

# %%
# Check: int64 in PyTorch, int32 in JAX (int64 with x64 on); float32 in both
assert tensor1d.dtype == torch.int64 and tensor1d_jax.dtype == jnp.int32
assert tensor3d_2.dtype == torch.int64 and tensor3d_2_jax.dtype == jnp.int32
assert_same(tensor1d_x64, tensor1d)  # with x64 on, the dtypes agree too
assert floats_x64.dtype == jnp.float32 and floats_x64_jnp.dtype == jnp.float64
assert_same(tensor1d_jax, tensor1d, same_dtype=False)
assert_same(floatvec_jax, floatvec)
assert_same(fm.tensor([1.0, 2.0, 3.0]), torch.tensor([1.0, 2.0, 3.0]))

# %% [markdown]
# ## A.2.3 Common tensor operations
#
# The operations the book lists have the same names in JAX. The exception is `.view`: a
# PyTorch view shares memory with the tensor it came from, so writing to one changes the other.
# JAX arrays cannot be written to, so there is nothing to share and `.reshape` is all you need.

# %%
# PyTorch (the book)
tensor2d = torch.tensor([[1, 2, 3], [4, 5, 6]])
print(tensor2d)
print(tensor2d.shape)
print(tensor2d.reshape(3, 2))
print(tensor2d.view(3, 2))
print(tensor2d.T)
print(tensor2d.matmul(tensor2d.T))
print(tensor2d @ tensor2d.T)

# %%
# JAX
tensor2d_jax = fm.tensor([[1, 2, 3], [4, 5, 6]])
print(tensor2d_jax)
print(tensor2d_jax.shape)
print(tensor2d_jax.reshape(3, 2))
print(tensor2d_jax.reshape(3, 2))  # no .view in JAX
print(tensor2d_jax.T)
print(jnp.matmul(tensor2d_jax, tensor2d_jax.T))
print(tensor2d_jax @ tensor2d_jax.T)

# %%
# Check: every operation gives the same numbers and shape; the book prints [[14, 32], [32, 77]]
assert tuple(tensor2d.shape) == tensor2d_jax.shape == (2, 3)
assert_same(tensor2d_jax.reshape(3, 2), tensor2d.reshape(3, 2), same_dtype=False)
assert_same(tensor2d_jax.reshape(3, 2), tensor2d.view(3, 2), same_dtype=False)
assert_same(tensor2d_jax.T, tensor2d.T, same_dtype=False)
assert_same(jnp.matmul(tensor2d_jax, tensor2d_jax.T), tensor2d.matmul(tensor2d.T), same_dtype=False)
assert_same(tensor2d_jax @ tensor2d_jax.T, tensor2d @ tensor2d.T, same_dtype=False)
assert (tensor2d_jax @ tensor2d_jax.T).tolist() == [[14, 32], [32, 77]]
assert_same(floatvec_jax @ floatvec_jax, floatvec @ floatvec)  # float32 in both: the dtype agrees

# %% [markdown]
# ## Changing a tensor: in place against a new array
#
# PyTorch writes into a tensor (`t[0, 0] = 999`, `t.add_(1)`). A `jax.Array` never changes:
# item assignment raises a `TypeError`, and `t.at[0, 0].set(999)` returns a **new** array with
# the change, leaving `t` as it was. Inside `jax.jit` the compiler turns that copy into an
# in-place update whenever the old array is not used again, so immutability costs no speed
# where it matters.

# %%
# PyTorch
t = torch.tensor([[1, 2, 3], [4, 5, 6]])
view = t.view(3, 2)
t[0, 0] = 999
print(t)
print(view)  # the view saw the write

# %%
# JAX
t_jax = fm.tensor([[1, 2, 3], [4, 5, 6]])
try:
    t_jax[0, 0] = 999
except TypeError as error:
    print("TypeError:", str(error)[:80], "...")
t_new = t_jax.at[0, 0].set(999)
print(t_new)
print(t_jax)  # unchanged

# %%
# Check: the new JAX array equals PyTorch's changed tensor; the old one is untouched
assert_same(t_new, t, same_dtype=False)
assert t_jax[0, 0] == 1 and view[0, 0] == 999
try:
    t_jax[0, 0] = 999
    raise AssertionError("a jax.Array accepted an item assignment")
except TypeError:
    pass

# %% [markdown]
# ## Summary
#
# | PyTorch | JAX with `fundamentals` |
# |---|---|
# | `torch.tensor([1, 2, 3])` (`int64`) | `fm.tensor([1, 2, 3])` (`int32`; `int64` with x64 on) |
# | `torch.tensor([1, 2, 3])` | `jnp.array([1, 2, 3])` (plain JAX) |
# | `torch.from_numpy(a)` (shares memory) | `fm.from_numpy(a)` (always a copy; `jax.device_put` may alias on CPU) |
# | `t.to(torch.float32)` | `t.astype(jnp.float32)` |
# | `t.shape` is `torch.Size([2, 3])` | `t.shape` is `(2, 3)` |
# | `t.reshape(3, 2)`, `t.view(3, 2)` | `t.reshape(3, 2)` |
# | `t.T`, `t.matmul(u)`, `t @ u` | `t.T`, `jnp.matmul(t, u)`, `t @ u` |
# | `t[0, 0] = 999` | `t = t.at[0, 0].set(999)` |

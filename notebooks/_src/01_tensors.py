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

# %% [markdown]
# One setting comes first, in every notebook. On a GPU or TPU, JAX multiplies float32 matrices
# at reduced precision by default (TF32 on recent NVIDIA GPUs, bfloat16 passes on TPUs: about
# three decimal digits, or fewer), where PyTorch keeps full float32 for matrix products;
# `jax_default_matmul_precision="highest"` asks JAX for full float32 too, without which the
# checks below, which compare with PyTorch to 1e-5, would fail there. On the CPU JAX already
# computes in full float32, so there it changes nothing.

# %%
import numpy as np
import torch
import jax
import jax.numpy as jnp
import fundamentals as fm
from fundamentals.testing import assert_same

torch.set_num_threads(1)
jax.config.update("jax_default_matmul_precision", "highest")  # full float32 matrix products on GPUs too

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
# Plain JAX makes an array with `jnp.array`. What `fm` does for you: `fm.tensor`
# ([source](../fundamentals/tensors.py)) wraps it with PyTorch's dtype rules (section A.2.2);
# with 64-bit mode off, as here, both give the same arrays.

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
# it. `jnp.array` and `fm.tensor` always copy, and `fm.from_numpy` too (where PyTorch's
# `from_numpy` shares), so changing the NumPy array afterwards changes none of them.
#
# JAX does not promise that it never shares a buffer, though. On the CPU, `jax.device_put`
# and `jnp.asarray` can use a NumPy array's memory without copying when it is suitably
# aligned, and DLPack (`torch.from_dlpack(x)`, `jnp.from_dlpack(t)`) hands the same buffer to
# the other library, which could then write to it. JAX's documentation of `from_dlpack` says
# that changing such a buffer in place afterwards may lead to **undefined behaviour**: JAX
# assumes its arrays never change, and what it computed or cached from the old contents is not
# updated. So share a buffer only to read it, and copy first (`jnp.array`, `fm.from_numpy`,
# `tensor.clone()`) when either side will write.

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
# JAX: where a buffer *is* shared. DLPack gives PyTorch the JAX array's own memory, no copy ...
shared_jax = jnp.array([1.0, 2.0, 3.0])
shared_torch = torch.from_dlpack(shared_jax)
print("same memory:", shared_torch.data_ptr() == shared_jax.unsafe_buffer_pointer())
# ... so PyTorch may read it. Writing into it would be undefined behaviour for JAX: copy first.
writable = shared_torch.clone()
writable[0] = 42.0
print(writable, shared_jax)

# %%
# Check: DLPack shared the buffer; the write went to PyTorch's copy; fm.from_numpy's copy is
# not affected by writes to its source
assert shared_torch.data_ptr() == shared_jax.unsafe_buffer_pointer()
assert writable.data_ptr() != shared_jax.unsafe_buffer_pointer()
assert float(writable[0]) == 42.0 and float(shared_jax[0]) == 1.0
assert_same(shared_jax, torch.tensor([1.0, 2.0, 3.0]))
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
# The operations the book lists have the same names in JAX, except `.view(3, 2)`. A PyTorch
# view is a tensor that shares memory with the one it came from, so writing to one changes the
# other. JAX arrays cannot be written to, so nothing would be gained by sharing: `.reshape` is
# all you need. `jax.Array.view` exists, but with NumPy's meaning, which PyTorch also has:
# `t.view(dtype)` reads the same bytes as another dtype (the bits of a float as an integer).
# `t.view(3, 2)` raises `NotImplementedError` in JAX.

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
print(tensor2d_jax.reshape(3, 2))  # .view(3, 2) -> .reshape(3, 2)
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

# %%
# PyTorch and JAX: .view(dtype) reinterprets the bytes in both; .view(shape) is PyTorch's only
one_torch, one_jax = torch.tensor([1.0, -2.0]), jnp.array([1.0, -2.0])
print(one_torch.view(torch.int32), one_jax.view(jnp.int32))  # the bits of 1.0 and -2.0 in float32
try:
    tensor2d_jax.view(3, 2)
except NotImplementedError as error:
    print(type(error).__name__ + ":", str(error).splitlines()[0])

# %%
# Check: the same bits in both; 1.0 is 0x3F800000 in IEEE 754 single precision
assert_same(one_jax.view(jnp.int32), one_torch.view(torch.int32))
assert int(one_jax.view(jnp.int32)[0]) == 0x3F800000
try:
    tensor2d_jax.view(3, 2)
    raise AssertionError("jax.Array.view accepted a shape")
except NotImplementedError:
    pass

# %% [markdown]
# ## Changing a tensor: in place against a new array
#
# PyTorch writes into a tensor (`t[0, 0] = 999`, `t.add_(1)`). A `jax.Array` never changes:
# item assignment raises a `TypeError`, and `t.at[0, 0].set(999)` returns a **new** array with
# the change, leaving `t` as it was.
#
# Is that a copy every time? Inside one `jax.jit`-compiled function, the compiler writes in
# place whenever the old value is not used again. An array passed *into* the compiled function
# is different: the caller may still hold it, so by default the result gets a new buffer. To
# let the compiler write into the input's buffer, *donate* it with `donate_argnums`: the donated
# array is then deleted, and using it again raises an error. A training step does this with
# the old parameters and optimizer state, which nobody needs once the new ones exist (notebook
# 05).

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
    print(type(error).__name__ + ":", str(error).split(". ")[0] + ".")  # its first sentence
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

# %%
# JAX: donation. Both functions return a changed copy of x; the second may reuse x's buffer.
def set_first(x):
    return x.at[0].set(999.0)


copying = jax.jit(set_first)
donating = jax.jit(set_first, donate_argnums=0)  # argument 0 is donated

x = jnp.zeros(1024)
x_buffer = x.unsafe_buffer_pointer()  # where x lives in memory (for the check only)
y = copying(x)
print("without donation: same buffer?", y.unsafe_buffer_pointer() == x_buffer, "| x still usable?", not x.is_deleted())
z = donating(x)
print("with donation:    same buffer?", z.unsafe_buffer_pointer() == x_buffer, "| x still usable?", not x.is_deleted())
try:
    x + 1
except RuntimeError as error:
    print(type(error).__name__ + ":", str(error).splitlines()[0])

# %%
# Check: PyTorch's in-place write, and both JAX results, give the same numbers; the donated
# buffer was reused and the donated array is gone (checked on the CPU, where this notebook is
# tested; a backend that cannot reuse a buffer only warns and copies)
t_torch = torch.zeros(1024)
t_torch[0] = 999.0
assert_same(y, t_torch)
assert_same(z, t_torch)
assert y.unsafe_buffer_pointer() != x_buffer
if jax.default_backend() == "cpu":
    assert z.unsafe_buffer_pointer() == x_buffer and x.is_deleted()

# %% [markdown]
# ## Printing: `torch.set_printoptions`
#
# The book turns off scientific notation with `torch.set_printoptions(sci_mode=False)`. A
# `jax.Array` prints through NumPy, so NumPy's print options set its format: `suppress=True`
# is `sci_mode=False`, `precision=4` PyTorch's four digits, and `floatmode="fixed"` keeps the
# trailing zeros as PyTorch does. The later notebooks set `np.set_printoptions(precision=4,
# suppress=True)` once in their set-up.

# %%
# PyTorch
small = [[0.00001234, 2.0]]
torch_default = str(torch.tensor(small))
torch.set_printoptions(sci_mode=False)
torch_fixed = str(torch.tensor(small))
torch.set_printoptions(profile="default")  # back to PyTorch's defaults
print(torch_default, torch_fixed, sep="\n")

# %%
# JAX
jax_default = str(jnp.array(small))
with np.printoptions(precision=4, suppress=True, floatmode="fixed"):  # np.set_printoptions(...) sets it for good
    jax_fixed = str(jnp.array(small))
print(jax_default, jax_fixed, sep="\n")

# %%
# Check: by default both print an exponent; with the options set, the same four-digit numbers
import re

number = re.compile(r"-?\d+\.\d+(?:e[-+]\d+)?")
assert "e-05" in torch_default and "e-05" in jax_default
assert number.findall(torch_fixed) == number.findall(jax_fixed) == ["0.0000", "2.0000"]

# %% [markdown]
# ## Summary
#
# | PyTorch | plain JAX | `fundamentals` |
# |---|---|---|
# | `torch.tensor([1, 2, 3])` (`int64`) | `jnp.array([1, 2, 3])` (`int32`; `int64` with x64 on) | `fm.tensor([1, 2, 3])` (the same) |
# | `torch.tensor([1.0])` (`float32`) | `jnp.array([1.0])` (`float32`; `float64` with x64 on) | `fm.tensor([1.0])` (always `float32`) |
# | `torch.from_numpy(a)` (shares memory; int64 stays int64) | `jnp.array(a)` (a copy; int64 becomes int32 unless x64 is on) | `fm.from_numpy(a)` (a copy, the same dtypes) |
# | `torch.from_dlpack(x)` | shares the buffer: read it, never write to it | |
# | `t.to(torch.float32)` | `t.astype(jnp.float32)` | |
# | `t.shape` is `torch.Size([2, 3])` | `t.shape` is `(2, 3)` | |
# | `t.reshape(3, 2)`, `t.view(3, 2)` | `t.reshape(3, 2)` | |
# | `t.view(torch.int32)` (the same bytes) | `t.view(jnp.int32)` | |
# | `t.T`, `t.matmul(u)`, `t @ u` | `t.T`, `jnp.matmul(t, u)`, `t @ u` | |
# | `t[0, 0] = 999` | `t = t.at[0, 0].set(999)`; in place inside `jax.jit` with `donate_argnums` | |
# | `torch.set_printoptions(sci_mode=False)` | `np.set_printoptions(suppress=True)` | |

"""A.2 tensors: dtypes, copy semantics and the book's operations, against PyTorch."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fundamentals as fm


def test_dtypes_follow_torch(torch):
    assert fm.tensor([1.0, 2.0, 3.0]).dtype == jnp.float32
    assert str(torch.tensor([1.0, 2.0, 3.0]).dtype) == "torch.float32"
    assert fm.tensor([True, False]).dtype == jnp.bool_
    assert fm.tensor([1, 2.5]).dtype == jnp.float32 == np.dtype(str(torch.tensor([1, 2.5]).dtype).split(".")[1])
    # ints: torch gives int64; JAX gives int64 only with x64 on, int32 otherwise.
    assert str(torch.tensor([1, 2, 3]).dtype) == "torch.int64"
    assert fm.tensor([1, 2, 3]).dtype == (jnp.int64 if jax.config.jax_enable_x64 else jnp.int32)
    # the defaults: torch's float32, and JAX's integer width (int64 only with x64 on)
    assert fm.default_float_dtype() == np.dtype(str(torch.get_default_dtype()).removeprefix("torch."))
    assert fm.default_int_dtype() == np.dtype("int64" if jax.config.jax_enable_x64 else "int32")


def test_ints_are_int64_with_x64():
    with jax.enable_x64(True):
        assert fm.tensor([1, 2, 3]).dtype == jnp.int64
        # floats stay float32 even with x64 on, as torch's default dtype
        assert fm.tensor([1.0]).dtype == jnp.float32


def test_explicit_dtype_wins(torch):
    t = fm.tensor([1, 2, 3], dtype=jnp.float32)
    assert t.dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(t), torch.tensor([1, 2, 3]).to(torch.float32).numpy())


def test_book_operations_match_torch(torch):
    data = [[1, 2, 3], [4, 5, 6]]
    t, tt = fm.tensor(data), torch.tensor(data)
    assert t.shape == tuple(tt.shape) == (2, 3)
    np.testing.assert_array_equal(np.asarray(t.reshape(3, 2)), tt.reshape(3, 2).numpy())
    np.testing.assert_array_equal(np.asarray(t.reshape(3, 2)), tt.view(3, 2).numpy())
    np.testing.assert_array_equal(np.asarray(t.T), tt.T.numpy())
    np.testing.assert_array_equal(np.asarray(jnp.matmul(t, t.T)), tt.matmul(tt.T).numpy())
    # the book prints [[14, 32], [32, 77]]
    np.testing.assert_array_equal(np.asarray(t @ t.T), [[14, 32], [32, 77]])
    np.testing.assert_array_equal(np.asarray(t.astype(jnp.float32)), tt.to(torch.float32).numpy())


def test_tensor_copies_numpy_and_from_numpy_does_too(torch):
    array = np.array([1.0, 2.0, 3.0], dtype=np.float32)
    copied = fm.tensor(array)
    shared_in_torch = torch.from_numpy(array)
    also_copied = fm.from_numpy(array)
    array[0] = 999.0
    assert float(shared_in_torch[0]) == 999.0  # torch.from_numpy shares memory...
    assert float(copied[0]) == 1.0  # ...a jax.Array never does
    assert float(also_copied[0]) == 1.0


def test_in_place_update_is_at_set(torch):
    tt = torch.tensor([[1, 2], [3, 4]])
    tt[0, 0] = 999
    t = fm.tensor([[1, 2], [3, 4]])
    t2 = t.at[0, 0].set(999)
    np.testing.assert_array_equal(np.asarray(t2), tt.numpy())
    assert int(t[0, 0]) == 1  # the original is unchanged


@pytest.mark.parametrize("bad", ["abc", None, [[1, 2], [3]]])
def test_bad_data_is_a_clear_error(bad):
    with pytest.raises((TypeError, ValueError), match="tensor"):
        fm.tensor(bad)


def test_from_numpy_rejects_lists():
    with pytest.raises(TypeError, match="numpy.ndarray"):
        fm.from_numpy([1, 2])


def test_to_numpy_reads_torch_jax_and_numpy(torch):
    t = torch.arange(6, dtype=torch.float32).reshape(2, 3).requires_grad_(True)
    np.testing.assert_array_equal(fm.to_numpy(t), t.detach().numpy())
    np.testing.assert_array_equal(fm.to_numpy(fm.tensor([[1, 2], [3, 4]])), [[1, 2], [3, 4]])
    assert fm.to_numpy([1.5, 2.5]).dtype == np.float64


def test_from_numpy_copies_an_aligned_array():
    # NumPy buffers aligned to 64 bytes are the ones jnp.asarray may use without a copy on a CPU
    raw = np.zeros(64 + 16 * 4, dtype=np.uint8)
    offset = (-raw.ctypes.data) % 64
    array = raw[offset : offset + 16 * 4].view(np.float32)
    assert array.ctypes.data % 64 == 0
    array[:] = np.arange(16, dtype=np.float32)
    converted = fm.from_numpy(array)
    array[:] = -1.0
    np.testing.assert_array_equal(np.asarray(converted), np.arange(16, dtype=np.float32))


@pytest.mark.parametrize("data", [[True, 2], [2, True], [[True], [3]], [True, 2.5], [[1.5], [False]], [True, False]])
def test_bools_mixed_with_numbers_take_torchs_dtype(torch, data):
    theirs = torch.tensor(data)
    ours = fm.tensor(data)
    assert np.asarray(ours).tolist() == theirs.tolist()  # [True, 2] is [1, 2], as in torch
    kind = str(theirs.dtype).removeprefix("torch.")
    if kind == "int64":
        assert ours.dtype == fm.default_int_dtype()
    else:
        assert ours.dtype == np.dtype(kind)

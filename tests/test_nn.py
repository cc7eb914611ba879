"""A.5: the network's parameters, its PyTorch parity and state dicts."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fundamentals as fm

from .helpers import torch_network


@pytest.mark.parametrize("shape, expected", [((50, 3), 2213), ((2, 2), 752)])
def test_parameter_counts(torch, shape, expected):
    model = fm.NeuralNetwork(*shape, key=jax.random.key(0))
    assert fm.count_parameters(model) == expected
    reference = torch_network(torch, *shape)
    assert sum(p.numel() for p in reference.parameters() if p.requires_grad) == expected


def test_state_dict_keys_and_shapes_are_torchs(torch):
    model = fm.NeuralNetwork(50, 3, key=jax.random.key(1))
    ours = {k: v.shape for k, v in fm.state_dict(model).items()}
    theirs = {k: tuple(v.shape) for k, v in torch_network(torch, 50, 3).state_dict().items()}
    assert ours == theirs
    assert list(ours) == list(theirs)


def test_book_seeded_network_outputs(torch):
    torch.manual_seed(123)
    reference = torch_network(torch, 50, 3)
    torch.manual_seed(123)  # the book seeds again before drawing its input
    X = torch.rand((1, 50))
    with torch.no_grad():
        expected = reference(X).numpy()
    # the book prints tensor([[-0.1262,  0.1080, -0.1792]])
    np.testing.assert_allclose(expected, [[-0.1262, 0.1080, -0.1792]], atol=5e-5)

    model = fm.load_state_dict(fm.NeuralNetwork(50, 3, key=jax.random.key(0)), reference.state_dict())
    got = np.asarray(model(X.numpy()))
    np.testing.assert_allclose(got, expected, atol=1e-6)
    # one example without a batch axis gives the same row
    np.testing.assert_allclose(np.asarray(model(X.numpy()[0])), expected[0], atol=1e-6)


def test_state_dict_round_trips_through_torch(torch):
    model = fm.NeuralNetwork(2, 2, key=jax.random.key(7))
    reference = torch_network(torch, 2, 2)
    reference.load_state_dict({k: torch.from_numpy(v) for k, v in fm.state_dict(model).items()})
    X = np.random.default_rng(0).normal(size=(5, 2)).astype(np.float32)
    with torch.no_grad():
        expected = reference(torch.from_numpy(X)).numpy()
    np.testing.assert_allclose(np.asarray(model(X)), expected, atol=1e-6)


def test_initialisation_follows_torchs_bounds():
    model = fm.NeuralNetwork(50, 3, key=jax.random.key(3))
    for layer, fan_in in zip(model.layers[::2], (50, 30, 20)):
        bound = 1 / np.sqrt(fan_in)
        assert float(jnp.abs(layer.weight).max()) <= bound
        assert float(jnp.abs(layer.bias).max()) <= bound
        # U(-b, b) has standard deviation b / sqrt(3)
        assert float(jnp.std(layer.weight)) == pytest.approx(bound / np.sqrt(3), rel=0.15)


def test_same_key_same_bits():
    a = fm.state_dict(fm.NeuralNetwork(2, 2, key=jax.random.key(123)))
    b = fm.state_dict(fm.NeuralNetwork(2, 2, key=jax.random.key(123)))
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_mismatched_state_dict_is_a_clear_error_and_model_unchanged():
    model = fm.NeuralNetwork(2, 2, key=jax.random.key(0))
    before = fm.state_dict(model)
    good = fm.state_dict(fm.NeuralNetwork(2, 2, key=jax.random.key(1)))

    wrong_shape = dict(good, **{"layers.4.weight": np.zeros((3, 20), np.float32)})
    with pytest.raises(ValueError, match=r"layers\.4\.weight.*\(3, 20\).*\(2, 20\)"):
        fm.load_state_dict(model, wrong_shape)
    # a transposed weight has the right size but not the right shape: refused, not reshaped
    transposed = dict(good, **{"layers.0.weight": good["layers.0.weight"].T.copy()})
    with pytest.raises(ValueError, match=r"layers\.0\.weight.*\(2, 30\).*\(30, 2\)"):
        fm.load_state_dict(model, transposed)
    missing = {k: v for k, v in good.items() if k != "layers.2.bias"}
    with pytest.raises(ValueError, match=r"missing.*layers\.2\.bias"):
        fm.load_state_dict(model, missing)
    with pytest.raises(ValueError, match=r"unexpected.*extra"):
        fm.load_state_dict(model, dict(good, extra=np.zeros(1)))
    with pytest.raises(TypeError, match="mapping"):
        fm.load_state_dict(model, [1, 2])
    after = fm.state_dict(model)
    assert all(np.array_equal(before[k], after[k]) for k in before)
    # strict=False keeps what is missing and ignores what is extra
    partial = fm.load_state_dict(model, dict(missing, extra=np.zeros(1)), strict=False)
    np.testing.assert_array_equal(fm.state_dict(partial)["layers.2.bias"], before["layers.2.bias"])
    np.testing.assert_array_equal(fm.state_dict(partial)["layers.0.weight"], good["layers.0.weight"])


def test_bad_input_shape_names_the_shape():
    model = fm.NeuralNetwork(2, 2, key=jax.random.key(0))
    with pytest.raises(ValueError, match=r"\(batch, 2\).*\(4, 3\)"):
        model(jnp.ones((4, 3)))


def test_repr_reads_like_torch(torch):
    ours = repr(fm.NeuralNetwork(50, 3, key=jax.random.key(0)))
    theirs = repr(torch_network(torch, 50, 3))
    assert ours == theirs


def test_dropout_needs_key_in_training_and_not_in_inference(torch):
    model = fm.NeuralNetwork(4, 2, key=jax.random.key(0), dropout=0.5)
    keys = list(fm.state_dict(model))
    assert keys[2] == "layers.3.weight"  # Linear, ReLU, Dropout, Linear: torch's indices
    x = jnp.ones((8, 4))
    with pytest.raises(RuntimeError, match="requires a key"):
        model(x)  # training mode: dropout cannot draw its mask without a key
    a = model(x, key=jax.random.key(1))
    b = model(x, key=jax.random.key(2))
    assert not np.allclose(np.asarray(a), np.asarray(b))
    # inference mode: dropout is the identity, as in torch's model.eval() with the same weights
    reference = torch.nn.Sequential(
        torch.nn.Linear(4, 30),
        torch.nn.ReLU(),
        torch.nn.Dropout(0.5),
        torch.nn.Linear(30, 20),
        torch.nn.ReLU(),
        torch.nn.Dropout(0.5),
        torch.nn.Linear(20, 2),
    )
    reference.load_state_dict({k.removeprefix("layers."): torch.from_numpy(v) for k, v in fm.state_dict(model).items()})
    reference.eval()
    with torch.no_grad():
        expected = reference(torch.ones(8, 4)).numpy()
    inference = eqx.nn.inference_mode(model)
    np.testing.assert_allclose(np.asarray(inference(x)), expected, atol=1e-6)


def test_loaded_model_does_not_alias_torch_memory(torch):
    # jnp.asarray can share NumPy's (and so torch's) memory on the CPU; an in-place torch
    # optimizer step must not change a model that was loaded from it.
    reference = torch_network(torch, 2, 2)
    model = fm.load_state_dict(fm.NeuralNetwork(2, 2, key=jax.random.key(0)), reference.state_dict())
    before = fm.state_dict(model)["layers.0.weight"].copy()
    with torch.no_grad():
        reference.layers[0].weight.add_(1.0)
    np.testing.assert_array_equal(fm.state_dict(model)["layers.0.weight"], before)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"dropout": "0.5"}, TypeError, "dropout must be a float"),
        ({"dropout": 1.0}, ValueError, r"dropout must be in \[0, 1\)"),
        ({"hidden": (30, 0)}, ValueError, r"hidden\[1\] must be a positive int, got 0"),
        ({"hidden": (30, 2.0)}, TypeError, r"hidden\[1\] must be a positive int, got float"),
    ],
)
def test_bad_constructor_arguments_name_the_argument(kwargs, error, match):
    with pytest.raises(error, match=match):
        fm.NeuralNetwork(2, 2, key=jax.random.key(0), **kwargs)
    with pytest.raises(ValueError, match="num_inputs must be a positive int"):
        fm.NeuralNetwork(0, 2, key=jax.random.key(0))


def test_every_layer_is_drawn_from_its_own_key():
    # Layers of one shape: drawn from one key they would be equal, element for element. As in torch, each
    # layer's numbers are independent draws: pairwise correlations near 0 (|r| < 0.3 for 64 values each;
    # shared keys give r = 1).
    model = fm.NeuralNetwork(8, 8, key=jax.random.key(0), hidden=(8, 8))
    weights = [np.asarray(layer.weight).ravel() for layer in model.layers[::2]]
    biases = [np.asarray(layer.bias).ravel() for layer in model.layers[::2]]
    for values in (weights, biases):
        for i in range(len(values)):
            for j in range(i + 1, len(values)):
                assert not np.array_equal(values[i], values[j])
        if len(values[0]) > 8:
            assert np.abs(np.corrcoef(values)[np.triu_indices(len(values), 1)]).max() < 0.3
    # and a layer's weight and bias are not drawn from one key either (the bias is not the weight's first row)
    for layer in model.layers[::2]:
        assert not np.allclose(np.asarray(layer.bias), np.asarray(layer.weight)[0])


def test_dropout_draws_one_mask_per_row(torch):
    # torch's Dropout zeroes each element of a batch independently: identical rows come out different.
    with torch.no_grad():
        reference = torch.nn.Dropout(0.5).train()(torch.ones(64, 30))
    assert len({tuple(row) for row in reference.numpy().tolist()}) == 64
    model = fm.NeuralNetwork(4, 2, key=jax.random.key(0), dropout=0.5)
    out = np.asarray(model(jnp.ones((64, 4)), key=jax.random.key(1)))
    assert len({tuple(row) for row in out.tolist()}) == 64  # one mask for the batch would give 1


@pytest.mark.parametrize(
    "num_inputs, num_outputs, hidden",
    [(50, 3, None), (2, 2, (30, 20)), (1, 1, (1,)), (3, 4, (5, 1, 2)), (7, 2, ())],
)
def test_sizes_computed_without_building_are_torchs(torch, num_inputs, num_outputs, hidden):
    from fundamentals.nn import parameter_count, parameter_shapes

    sizes = (num_inputs, *((30, 20) if hidden is None else hidden), num_outputs)
    layers = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        layers += [torch.nn.Linear(fan_in, fan_out), torch.nn.ReLU()]
    reference = torch.nn.Sequential(*layers[:-1])
    theirs = {f"layers.{k}": tuple(v.shape) for k, v in reference.state_dict().items()}
    extra = {} if hidden is None else {"hidden": hidden}
    assert parameter_shapes(num_inputs, num_outputs, **extra) == theirs
    expected = sum(p.numel() for p in reference.parameters())
    assert parameter_count(num_inputs, num_outputs, **extra) == expected
    model = fm.NeuralNetwork(num_inputs, num_outputs, key=jax.random.key(0), **extra)  # sizes of 1 are sizes
    assert fm.count_parameters(model) == expected
    assert {k: v.shape for k, v in fm.state_dict(model).items()} == theirs


def test_every_leaf_of_the_model_is_a_parameter_array():
    # As torch's model.parameters(): optimizers and jax.grad see arrays only, never the layer sizes.
    model = fm.NeuralNetwork(3, 2, key=jax.random.key(0), hidden=(4, 5))
    leaves = jax.tree_util.tree_leaves(model)
    assert len(leaves) == 6 and all(isinstance(leaf, jax.Array) for leaf in leaves)


def test_each_layer_is_drawn_as_by_hand_from_its_split_key():
    # The scheme, drawn here in plain JAX: one key per Linear from jax.random.split(key, layers), then
    # U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for the weight and the bias from that key's two halves, as
    # torch.nn.Linear draws its bounds.
    key = jax.random.key(42)
    model = fm.NeuralNetwork(3, 2, key=key, hidden=(4, 5))
    sizes = (3, 4, 5, 2)
    for layer_key, layer, (fan_in, fan_out) in zip(
        jax.random.split(key, 3), model.layers[::2], zip(sizes[:-1], sizes[1:])
    ):
        weight_key, bias_key = jax.random.split(layer_key)
        bound = 1 / np.sqrt(fan_in)
        weight = jax.random.uniform(weight_key, (fan_out, fan_in), minval=-bound, maxval=bound)
        bias = jax.random.uniform(bias_key, (fan_out,), minval=-bound, maxval=bound)
        np.testing.assert_array_equal(np.asarray(layer.weight), np.asarray(weight))
        np.testing.assert_array_equal(np.asarray(layer.bias), np.asarray(bias))

# %% [markdown]
# # A.6 Setting up efficient data loaders
#
# The book's toy data, its `ToyDataset` and its `DataLoader`s, in PyTorch and with
# `fundamentals`. `fm.DataLoader` takes the same arguments and behaves the same way (batch
# sizes, a new shuffle every epoch, `drop_last`, samplers), but its batches are NumPy arrays
# that stay on the host until a compiled step takes them, and its shuffling comes from its own
# generator, seeded by `seed=`, instead of PyTorch's global one.
#
# One thing cannot match: the *shuffled order* for seed 123. PyTorch and NumPy have different
# random generators, so `torch.manual_seed(123)` and `seed=123` give different permutations.
# To compare batch by batch, we record PyTorch's order and replay it through `fm.DataLoader`
# with a `sampler`.

# %%
import matplotlib.pyplot as plt
import numpy as np
import torch
import jax
import fundamentals as fm
from fundamentals.testing import assert_same

torch.set_num_threads(1)
jax.config.update("jax_default_matmul_precision", "highest")  # full float32 on GPUs too (not TF32)
np.set_printoptions(precision=4, suppress=True)  # print arrays to PyTorch's 4 digits
# %config InlineBackend.figure_formats = ["png"]
plt.rcParams["figure.dpi"] = 80


def row_indices(batch_features, features):
    """Which rows of `features` a batch holds (the toy data's rows are all different)."""
    features = np.asarray(features)
    return [int(np.flatnonzero((features == row).all(axis=1))[0]) for row in np.asarray(batch_features)]

# %% [markdown]
# ## The toy data

# %%
# PyTorch (the book)
X_train = torch.tensor([
    [-1.2, 3.1],
    [-0.9, 2.9],
    [-0.5, 2.6],
    [2.3, -1.1],
    [2.7, -1.5]
])
y_train = torch.tensor([0, 0, 0, 1, 1])

X_test = torch.tensor([
    [-0.8, 2.8],
    [2.6, -1.6],
])
y_test = torch.tensor([0, 1])

# %%
# JAX: the same data as NumPy arrays; datasets stay on the host
X_train_np, y_train_np, X_test_np, y_test_np = fm.toy_data()
print(X_train_np.dtype, y_train_np.dtype)

# %%
# Check: the same numbers and dtypes (NumPy keeps int64 labels; they become int32 on a device)
for ours, theirs in [(X_train_np, X_train), (y_train_np, y_train), (X_test_np, X_test), (y_test_np, y_test)]:
    assert_same(ours, theirs)

# %% [markdown]
# ## Listing A.5: a dataset
#
# `fm.ToyDataset` (another name for `fm.ArrayDataset`) holds arrays of the same length and
# returns item `i` as `(X[i], y[i])`, as the book's class does. `fm.DataLoader` also takes the
# book's class as written: any object with `__len__` and `__getitem__` is a dataset.

# %%
# PyTorch (the book)
from torch.utils.data import Dataset


class ToyDataset(Dataset):
    def __init__(self, X, y):
        self.features = X
        self.labels = y

    def __getitem__(self, index):
        one_x = self.features[index]
        one_y = self.labels[index]
        return one_x, one_y

    def __len__(self):
        return self.labels.shape[0]


train_ds = ToyDataset(X_train, y_train)
test_ds = ToyDataset(X_test, y_test)
print(len(train_ds))

# %%
# JAX
train_ds_jax = fm.ToyDataset(X_train_np, y_train_np)
test_ds_jax = fm.ToyDataset(X_test_np, y_test_np)
print(len(train_ds_jax))
print(train_ds_jax[0])

# %%
# Check: the same length and items
assert len(train_ds) == len(train_ds_jax) == 5 and len(test_ds) == len(test_ds_jax) == 2
for i in range(len(train_ds)):
    assert_same(train_ds_jax[i][0], train_ds[i][0])
    assert_same(train_ds_jax[i][1], train_ds[i][1])

# %% [markdown]
# ## Listing A.6: data loaders
#
# We print the batches as the book does, and also note which rows each PyTorch batch holds.

# %%
# PyTorch (the book)
from torch.utils.data import DataLoader

torch.manual_seed(123)

train_loader = DataLoader(
    dataset=train_ds,
    batch_size=2,
    shuffle=True,
    num_workers=0
)

test_loader = DataLoader(
    dataset=test_ds,
    batch_size=2,
    shuffle=False,
    num_workers=0
)

torch_batches, torch_order = [], []  # (recorded for the checks)
for idx, (x, y) in enumerate(train_loader):
    print(f"Batch {idx+1}:", x, y)
    torch_batches.append((x, y))
    torch_order += row_indices(x, X_train)
print("rows:", torch_order)
torch_batches_full = list(torch_batches)  # (kept for a later check)

# %% [markdown]
# ### In plain JAX: an epoch iterator from a key
#
# For data that fits in memory a loader is a few lines of JAX. One key for the whole run,
# `jax.random.fold_in(key, epoch)` for each epoch's permutation, then slices of it: a new order
# every epoch, the same orders for the same key, and nothing else can move them. Here it is,
# with the book's `batch_size=2` and `drop_last`.

# %%
# JAX, plain
def epoch_batches(key, epoch, X, y, batch_size, drop_last=False):
    order = jax.random.permutation(jax.random.fold_in(key, epoch), len(X))
    stop = len(X) - len(X) % batch_size if drop_last else len(X)
    for start in range(0, stop, batch_size):
        rows = order[start:start + batch_size]
        yield X[rows], y[rows]


data_key = jax.random.key(123)
for epoch in range(2):
    print(f"epoch {epoch}:", [row_indices(x, X_train_np) for x, _ in epoch_batches(data_key, epoch, X_train_np, y_train_np, 2)])

# %%
# Check: PyTorch's shape of an epoch (2, 2, then 1; or 2, 2 with drop_last); every row once;
# the same key and epoch give the same order, the next epoch another one
plain_epochs = [[i for x, _ in epoch_batches(data_key, e, X_train_np, y_train_np, 2) for i in row_indices(x, X_train_np)]
                for e in range(3)]
assert [len(y) for _, y in epoch_batches(data_key, 0, X_train_np, y_train_np, 2)] == [len(y) for _, y in torch_batches]
assert [len(y) for _, y in epoch_batches(data_key, 0, X_train_np, y_train_np, 2, drop_last=True)] == [2, 2]
assert all(sorted(order) == [0, 1, 2, 3, 4] for order in plain_epochs)
assert plain_epochs[0] == [i for x, _ in epoch_batches(jax.random.key(123), 0, X_train_np, y_train_np, 2)
                           for i in row_indices(x, X_train_np)]
assert len({tuple(order) for order in plain_epochs}) > 1
for x, y in epoch_batches(data_key, 0, X_train_np, y_train_np, 2):
    assert_same(x, X_train[row_indices(x, X_train_np)])
    assert_same(y, y_train[row_indices(x, X_train_np)])

# %% [markdown]
# ### With `fundamentals`
#
# What `fm` does for you: `fm.DataLoader` ([source](../fundamentals/data.py)) takes PyTorch's
# arguments and rules (any dataset class with `__len__` and `__getitem__`, samplers, workers,
# `drop_last`, the argument checks). Its shuffle comes from its own NumPy generator, seeded by
# `seed=`, so its order differs from PyTorch's; to compare batch by batch we replay PyTorch's
# order through a `sampler`.

# %%
# JAX: its own shuffle (seed=123), then PyTorch's order replayed through a sampler
train_loader_jax = fm.DataLoader(train_ds_jax, batch_size=2, shuffle=True, seed=123, num_workers=0)
test_loader_jax = fm.DataLoader(test_ds_jax, batch_size=2, shuffle=False, num_workers=0)

jax_batches = list(train_loader_jax)
for idx, (x, y) in enumerate(jax_batches):
    print(f"Batch {idx+1}:", x, y)

replay_loader = fm.DataLoader(train_ds_jax, batch_size=2, sampler=torch_order)
print("replayed:")
for idx, (x, y) in enumerate(replay_loader):
    print(f"Batch {idx+1}:", x, y)

# %%
# Check: our shuffle has PyTorch's shape of an epoch (2, 2, then 1; every row once; same dtypes);
# the replayed order gives PyTorch's batches exactly.
assert len(train_loader) == len(train_loader_jax) == 3
assert [len(y) for _, y in jax_batches] == [len(y) for _, y in torch_batches] == [2, 2, 1]
jax_order = [i for x, _ in jax_batches for i in row_indices(x, X_train_np)]
assert sorted(jax_order) == sorted(torch_order) == [0, 1, 2, 3, 4]
for (x, y), (x_torch, y_torch) in zip(replay_loader, torch_batches, strict=True):
    assert_same(x, x_torch)
    assert_same(y, y_torch)

# %% [markdown]
# ## `drop_last=True`
#
# A last batch of one example makes a noisy update, so the book drops it. In the book the new
# loader is created without setting the seed again, so PyTorch's order continues from the
# global generator; we record it and replay it as before.

# %%
# PyTorch (the book)
train_loader = DataLoader(
    dataset=train_ds,
    batch_size=2,
    shuffle=True,
    num_workers=0,
    drop_last=True
)

torch_batches, torch_order = [], []
for idx, (x, y) in enumerate(train_loader):
    print(f"Batch {idx+1}:", x, y)
    torch_batches.append((x, y))
    torch_order += row_indices(x, X_train)

# %%
# JAX
train_loader_jax = fm.DataLoader(train_ds_jax, batch_size=2, shuffle=True, seed=123, drop_last=True)
for idx, (x, y) in enumerate(train_loader_jax):
    print(f"Batch {idx+1}:", x, y)

# the replayed order: the sampler lists all five rows, as PyTorch's does, and the fifth is dropped
full_order = torch_order + sorted(set(range(5)) - set(torch_order))
replay_loader = fm.DataLoader(train_ds_jax, batch_size=2, sampler=full_order, drop_last=True)

# %%
# Check: two batches of two in both; the replay gives PyTorch's batches
assert len(train_loader) == len(train_loader_jax) == len(replay_loader) == 2
assert [len(y) for _, y in train_loader_jax] == [2, 2]
for (x, y), (x_torch, y_torch) in zip(replay_loader, torch_batches, strict=True):
    assert_same(x, x_torch)
    assert_same(y, y_torch)
# and the unshuffled test loaders give the same batches
for (x, y), (x_torch, y_torch) in zip(test_loader_jax, test_loader, strict=True):
    assert_same(x, x_torch)
    assert_same(y, y_torch)

# %% [markdown]
# ## Every epoch a new order, and the same epochs for the same seed
#
# Iterating a shuffling loader again draws a new permutation, in both libraries. With
# `fundamentals` the whole sequence of epochs is fixed by `seed`: a new loader with the same
# seed repeats it.

# %%
# PyTorch
print([row_indices(x, X_train) for x, _ in train_loader])  # the drop_last loader's second epoch

# %%
# JAX
print([row_indices(x, X_train_np) for x, _ in train_loader_jax])  # its second epoch
again = fm.DataLoader(train_ds_jax, batch_size=2, shuffle=True, seed=123)
first_epoch_again = [row_indices(x, X_train_np) for x, _ in again]
print(first_epoch_again)  # a new loader, seed 123: the first epoch again

# %%
# Check: same seed, same epochs
assert sum(first_epoch_again, []) == jax_order

# %% [markdown]
# The same as a picture: four epochs of the book's loader (`batch_size=2`, `shuffle=True`, 5
# rows) in both libraries, one row per epoch, each cell the index of a dataset row, coloured by
# that row, the batches boxed. With `drop_last=True` the faded fifth cell would not be seen.

# %%
def epoch_grid(loader, features, epochs=4):
    """Rows: epochs; entries: the dataset indices in the order the loader gives them."""
    return np.array([[i for x, _ in loader for i in row_indices(x, features)] for _ in range(epochs)])


def draw_grid(ax, grid, colours, title, batch_size=None, dimmed=()):
    """One cell per index: its number on a colour chosen by `colours` (a grid of the same shape)."""
    palette = plt.get_cmap("tab10")
    for (epoch, position), value in np.ndenumerate(grid):
        faded = position in dimmed
        ax.add_patch(plt.Rectangle((position, epoch), 1, 1, facecolor=palette(colours[epoch, position]),
                                   alpha=0.25 if faded else 0.85, edgecolor="white"))
        ax.text(position + 0.5, epoch + 0.5, str(value), ha="center", va="center", fontsize=11,
                color="#374151" if faded else "white", fontweight="bold")
    if batch_size:
        for epoch in range(grid.shape[0]):
            for start in range(0, grid.shape[1], batch_size):
                width = min(batch_size, grid.shape[1] - start)
                ax.add_patch(plt.Rectangle((start + 0.04, epoch + 0.06), width - 0.08, 0.88, fill=False,
                                           edgecolor="#111827", linewidth=1.5))
    ax.set_xlim(0, grid.shape[1])
    ax.set_ylim(grid.shape[0], 0)
    ax.set_xticks(np.arange(grid.shape[1]) + 0.5, [str(k) for k in range(grid.shape[1])])
    ax.set_yticks(np.arange(grid.shape[0]) + 0.5, [f"epoch {e}" for e in range(grid.shape[0])])
    ax.set_xlabel("position in the epoch")
    ax.tick_params(length=0)
    ax.set_title(title, fontsize=10)


torch.manual_seed(123)
torch_grid = epoch_grid(DataLoader(train_ds, batch_size=2, shuffle=True), X_train)
jax_grid = epoch_grid(fm.DataLoader(train_ds_jax, batch_size=2, shuffle=True, seed=123), X_train_np)
fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
draw_grid(axes[0], torch_grid, torch_grid, "PyTorch DataLoader, torch.manual_seed(123)", batch_size=2, dimmed=(4,))
draw_grid(axes[1], jax_grid, jax_grid, "fm.DataLoader(..., seed=123)", batch_size=2, dimmed=(4,))
fig.suptitle("Each epoch a new permutation of the 5 rows, cut into batches of 2 (faded: the batch drop_last drops)", fontsize=10)
fig.tight_layout()
plt.show()

# %%
# Check: in both libraries every epoch is a permutation of the five rows, and the epochs differ;
# the first epoch of the pictured loader is the seed-123 epoch checked above
for grid in (torch_grid, jax_grid):
    assert all(sorted(row) == [0, 1, 2, 3, 4] for row in grid.tolist())
    assert len({tuple(row) for row in grid.tolist()}) > 1
assert jax_grid[0].tolist() == jax_order

# %% [markdown]
# ## Explicit randomness
#
# PyTorch's loader draws its shuffle from the global generator, so anything else that draws a
# random number in between (a model's initial weights, dropout) changes the order of the
# batches. Even iterating an *unshuffled* loader draws one number from it (a base seed for the
# workers), which is why this notebook checks the test loaders only after the book's loops.
# `fm.DataLoader` owns its generator: nothing else can move it.

# %%
# PyTorch: one extra random draw changes the batches
def first_epoch(loader, features):
    return [i for x, _ in loader for i in row_indices(x, features)]


torch.manual_seed(123)
plain = first_epoch(DataLoader(train_ds, batch_size=2, shuffle=True), X_train)
torch.manual_seed(123)
loader = DataLoader(train_ds, batch_size=2, shuffle=True)
torch.rand(1)  # e.g. a layer initialised in between
disturbed = first_epoch(loader, X_train)
torch.manual_seed(123)
loader = DataLoader(train_ds, batch_size=2, shuffle=True)
list(test_loader)  # one pass over the unshuffled test loader
after_test = first_epoch(loader, X_train)
print(plain, disturbed, after_test)

# %%
# JAX: other random draws (NumPy's global generator, JAX keys) do not touch the loader's
loader_jax = fm.DataLoader(train_ds_jax, batch_size=2, shuffle=True, seed=123)
np.random.rand(1)
plain_jax = first_epoch(loader_jax, X_train_np)
print(plain_jax)

# %%
# Check
assert plain != disturbed and plain != after_test
assert plain_jax == jax_order

# %% [markdown]
# ## `num_workers`
#
# PyTorch's `num_workers > 0` loads batches in worker processes (which the book advises against
# in Jupyter). `fm.DataLoader` does the same for a dataset that does Python work in
# `__getitem__` (started safely after JAX, with the dataset pickled by cloudpickle, so a class
# defined in a notebook works). For an `ArrayDataset`, whose batch is one NumPy gather that
# releases the GIL, it uses threads by default (`worker_type="thread"`): no pickling, no copy.
# The batches are the same either way, and the same as with no workers.

# %%
# JAX
serial = list(fm.DataLoader(train_ds_jax, batch_size=2, shuffle=True, seed=7))
threaded = list(fm.DataLoader(train_ds_jax, batch_size=2, shuffle=True, seed=7, num_workers=2))

# %%
# Check
for (x, y), (x_threaded, y_threaded) in zip(serial, threaded, strict=True):
    assert np.array_equal(x, x_threaded) and np.array_equal(y, y_threaded)

# %% [markdown]
# ## `DistributedSampler`: one share of the data per process
#
# For multi-GPU training (section A.9) each process loads only its share of the data: a
# `DistributedSampler` splits the indices across `num_replicas` processes, padding the list by
# repeating its head so that every rank gets the same count (or cutting the tail with
# `drop_last=True`). `fm.DistributedSampler` follows the same rules. Without shuffling the
# indices agree exactly; with shuffling the permutation (`seed + epoch`) again comes from a
# different generator.

# %%
# PyTorch
from torch.utils.data.distributed import DistributedSampler

for rank in range(2):
    sampler = DistributedSampler(train_ds, num_replicas=2, rank=rank, shuffle=False)
    print(f"rank {rank}:", list(sampler))

# %%
# JAX
for rank in range(2):
    sampler_jax = fm.DistributedSampler(train_ds_jax, num_replicas=2, rank=rank, shuffle=False)
    print(f"rank {rank}:", list(sampler_jax))

# %%
# Check: the same indices for several dataset sizes, process counts and drop_last
for n in (5, 7, 8, 11):
    data = list(range(n))
    for num_replicas in (1, 2, 3, 4):
        for drop_last in (False, True):
            for rank in range(num_replicas):
                ours = fm.DistributedSampler(data, num_replicas, rank, shuffle=False, drop_last=drop_last)
                theirs = DistributedSampler(data, num_replicas, rank, shuffle=False, drop_last=drop_last)
                assert list(ours) == list(theirs), (n, num_replicas, rank, drop_last)
                assert len(ours) == len(theirs)

# %% [markdown]
# With `shuffle=True` and `set_epoch(epoch)` before each epoch, the ranks still split one
# shared permutation between them: together they cover every example, and a new epoch gives a
# new permutation. Here is the book's DDP loader (A.9.3) for rank 0 and 1, in both libraries.

# %%
# PyTorch (the book's loader for DDP, for rank 0 and 1 of 2)
torch_epochs = {}
for rank in range(2):
    sampler = DistributedSampler(train_ds, num_replicas=2, rank=rank)  # shuffle=True, seed=0
    loader = DataLoader(dataset=train_ds, batch_size=2, shuffle=False, drop_last=True, sampler=sampler)
    for epoch in range(2):
        sampler.set_epoch(epoch)
        torch_epochs[rank, epoch] = [row_indices(x, X_train) for x, _ in loader]
print(torch_epochs)

# %%
# JAX
jax_epochs = {}
for rank in range(2):
    sampler_jax = fm.DistributedSampler(train_ds_jax, num_replicas=2, rank=rank)
    loader_jax = fm.DataLoader(train_ds_jax, batch_size=2, shuffle=False, drop_last=True, sampler=sampler_jax)
    for epoch in range(2):
        sampler_jax.set_epoch(epoch)
        jax_epochs[rank, epoch] = [row_indices(x, X_train_np) for x, _ in loader_jax]
print(jax_epochs)

# %%
# Check: in both, each rank gets one batch of 2 from its 3 indices (5 padded to 6); the two
# ranks together cover all five rows; set_epoch(1) gives a new permutation.
for epochs in (torch_epochs, jax_epochs):
    assert all(len(batches) == 1 and len(batches[0]) == 2 for batches in epochs.values())
for sampler_type in (DistributedSampler, fm.DistributedSampler):
    for epoch in range(2):
        covered = set()
        for rank in range(2):
            sampler = sampler_type(list(range(5)), num_replicas=2, rank=rank)
            sampler.set_epoch(epoch)
            assert len(list(sampler)) == len(sampler) == 3
            covered |= set(sampler)
        assert covered == {0, 1, 2, 3, 4}
    sampler = sampler_type(list(range(100)), num_replicas=2, rank=0)
    epoch0 = list(sampler)
    sampler.set_epoch(1)
    assert list(sampler) != epoch0

# %% [markdown]
# ### Who gets which row: a picture
#
# The rule, in both libraries: each epoch one permutation of the indices (from `seed + epoch`),
# padded with its own first entries to a multiple of `num_replicas`, then dealt out like cards:
# rank `r` takes positions `r, r + num_replicas, ...`. Below, the 5 rows over 2 ranks for three
# epochs: each cell is a dataset index, coloured by the rank that loads it; the faded cell is
# the padding, a row that one rank sees twice in that epoch. The permutations differ between
# the libraries (different generators), the dealing does not.

# %%
def dealt(sampler_type, dataset, num_replicas, epochs=3):
    """(indices in dealing order, the rank of each) per epoch, rebuilt from what each rank's sampler yields."""
    indices, ranks = [], []
    for epoch in range(epochs):
        per_rank = []
        for rank in range(num_replicas):
            sampler = sampler_type(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=0)
            sampler.set_epoch(epoch)
            per_rank.append(list(sampler))
        order = [per_rank[rank][k] for k in range(len(per_rank[0])) for rank in range(num_replicas)]
        indices.append(order)
        ranks.append([position % num_replicas for position in range(len(order))])
    return np.array(indices), np.array(ranks)


torch_dealt, torch_ranks = dealt(DistributedSampler, train_ds, 2)
jax_dealt, jax_ranks = dealt(fm.DistributedSampler, train_ds_jax, 2)
fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
draw_grid(axes[0], torch_dealt, torch_ranks, "torch DistributedSampler(num_replicas=2, seed=0)", dimmed=(5,))
draw_grid(axes[1], jax_dealt, jax_ranks, "fm.DistributedSampler(num_replicas=2, seed=0)", dimmed=(5,))
handles = [plt.Rectangle((0, 0), 1, 1, color=plt.get_cmap("tab10")(rank)) for rank in range(2)]
fig.legend(handles, ["rank 0", "rank 1"], loc="lower center", ncol=2, frameon=False)
fig.suptitle("Three epochs of 5 rows dealt to 2 ranks (faded: the padding, a repeat of the epoch's first row)", fontsize=10)
fig.tight_layout(rect=(0, 0.07, 1, 1))
plt.show()

# %%
# Check: in both libraries each epoch deals a permutation of the 5 rows plus one repeat of its
# first, alternating between the ranks; each rank gets 3; a new epoch, a new permutation
for indices, ranks in ((torch_dealt, torch_ranks), (jax_dealt, jax_ranks)):
    for order, owners in zip(indices.tolist(), ranks.tolist()):
        assert sorted(order[:5]) == [0, 1, 2, 3, 4] and order[5] == order[0]
        assert owners == [0, 1, 0, 1, 0, 1]
    assert len({tuple(order) for order in indices.tolist()}) > 1

# %% [markdown]
# ## Where to go next: Grain
#
# [Grain](https://github.com/google/grain) is a library for loading data to train JAX models:
# data sources read by index (record files too large for memory), transformations run in
# worker processes, deterministic order, and an iterator whose state goes into a checkpoint,
# so that a run stopped mid-epoch resumes with the same batches. `fm.DataLoader` keeps
# PyTorch's interface and its datasets instead, for the book's code as it is written.

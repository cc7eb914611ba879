"""Where a small matrix product stops gaining from being written as a fused multiply-and-sum, on this CPU.

```
python benchmarks/small_dots.py [--rounds 7] [--quick]
```

Part 1 times a linear layer's training step (forward `x @ W.T + b`, tanh, and the gradients of
`W`, `b` and `x`: three products of batch × in × out multiply-adds each), scanned over many
steps in one compiled call, as `jax.jit` compiles it and rewritten by
`fundamentals._small_dots.fuse_small_dots` with no size bound. Part 2 times the book's network
(2→30→20→2, batch 2, SGD 0.5) scanned over 1,000 steps, plain and rewritten with the default
bound. Every figure is the median over interleaved rounds (plain, rewritten, plain, ...), so
both variants see the same machine load; the script prints the load average before and after.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

import fundamentals as fm
from fundamentals._small_dots import MAX_ELEMENTS, fuse_small_dots


def layer_step(carry, _):
    W, b, x = carry

    def loss(W, b, x):
        return jnp.sum(jnp.tanh(x @ W.T + b) ** 2)

    gW, gb, gx = jax.grad(loss, argnums=(0, 1, 2))(W, b, x)
    return (W - 1e-3 * gW, b - 1e-3 * gb, x - 1e-3 * gx), None


def layer_program(batch: int, fan_in: int, fan_out: int, steps: int, rewrite: bool):
    step = fuse_small_dots(layer_step, max_elements=2**62) if rewrite else layer_step
    run = jax.jit(lambda carry: jax.lax.scan(step, carry, None, length=steps)[0])
    rng = np.random.default_rng(0)
    carry = tuple(
        jnp.asarray(rng.standard_normal(shape, dtype=np.float32) * 0.1)
        for shape in ((fan_out, fan_in), (fan_out,), (batch, fan_in))
    )
    jax.block_until_ready(run(carry))
    hlo = run.lower(carry).compile().as_text()
    return (lambda: jax.block_until_ready(run(carry))), hlo.count(" dot(")


def book_programs(steps: int):
    model = fm.NeuralNetwork(2, 2, key=jax.random.key(123))
    params, static = eqx.partition(model, eqx.is_inexact_array)
    optimizer = optax.sgd(0.5)

    def step(carry, batch):
        params, opt_state = carry
        X, y = batch
        loss, grads = jax.value_and_grad(lambda p: fm.cross_entropy(eqx.combine(p, static)(X), y))(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), loss

    X, y, _, _ = fm.toy_data()
    order = np.random.default_rng(0).integers(0, len(X), size=(steps, 2))
    Xs, ys = jnp.asarray(X[order]), jnp.asarray(y[order])
    carry = (params, optimizer.init(params))
    programs = {}
    for name, body in (("plain", step), ("rewritten", fuse_small_dots(step))):
        run = jax.jit(lambda carry, Xs, ys, body=body: jax.lax.scan(body, carry, (Xs, ys)))
        jax.block_until_ready(run(carry, Xs, ys))
        programs[name] = lambda run=run: jax.block_until_ready(run(carry, Xs, ys))
    return programs


def interleaved(programs: dict, rounds: int, per: int) -> dict:
    samples: dict[str, list[float]] = {name: [] for name in programs}
    for _ in range(rounds):
        for name, run in programs.items():
            start = time.perf_counter()
            run()
            samples[name].append((time.perf_counter() - start) / per * 1e6)
    return {name: statistics.median(values) for name, values in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="a few sizes, three rounds")
    args = parser.parse_args()
    rounds = 3 if args.quick else args.rounds
    print(
        f"JAX {jax.__version__} on {jax.devices()[0].device_kind}, {os.cpu_count()} cores; "
        f"load average {os.getloadavg()[0]:.2f}; {rounds} interleaved rounds, medians"
    )

    shapes = [(2, 2, 30), (2, 30, 20), (2, 20, 2)]  # the book's layers
    widths = (8, 32) if args.quick else (8, 16, 32, 64, 128, 256)
    batches = (2, 32) if args.quick else (2, 8, 32, 128, 256)
    shapes += [(b, w, w) for b in batches for w in widths]
    if not args.quick:  # around the crossover: 2,048 and 4,096 multiply-adds in other shapes
        shapes += [(2, 24, 24), (2, 32, 64), (4, 32, 32), (8, 16, 32), (16, 16, 16), (64, 8, 8)]
    shapes.sort(key=lambda s: s[0] * s[1] * s[2])
    print("\nA linear layer's training step (forward, dW, dx), scanned; µs a step")
    print(
        "| batch × in × out | multiply-adds a product | jax.jit | rewritten | rewritten / jax.jit | dots (jit, rewritten) |"
    )
    print("|---|---:|---:|---:|---:|---|")
    for batch, fan_in, fan_out in shapes:
        elements = batch * fan_in * fan_out
        steps = int(np.clip(2e7 / elements, 10, 1000))
        plain, plain_dots = layer_program(batch, fan_in, fan_out, steps, rewrite=False)
        fused, fused_dots = layer_program(batch, fan_in, fan_out, steps, rewrite=True)
        us = interleaved({"plain": plain, "fused": fused}, rounds, steps)
        print(
            f"| {batch} × {fan_in} × {fan_out} | {elements:,} | {us['plain']:.2f} | {us['fused']:.2f} | "
            f"{us['fused'] / us['plain']:.2f} | {plain_dots}, {fused_dots} |",
            flush=True,
        )

    steps = 1000
    us = interleaved(book_programs(steps), rounds * 3, steps)
    print(
        f"\nThe book's network, lax.scan over {steps} steps (default bound {MAX_ELEMENTS:,}): "
        f"jax.jit {us['plain']:.2f} µs a step, rewritten {us['rewritten']:.2f} µs "
        f"({us['plain'] / us['rewritten']:.2f}× faster)"
    )
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()

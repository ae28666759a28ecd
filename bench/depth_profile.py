"""A clinic's brightness by depth against the reference machine's, and images with it undone
(issue 60's lead for the machine one head cannot reach; measured in ``bench/``, not built into
the box).

The reference machine renders the phantoms as the demo model was trained on them. A clinic's
profile is measured on unlabelled images of its own; dividing each image, row by row, by the
clinic's ratio to the reference undoes its gain and depth attenuation before the model.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from phantoms.images import generate
from phantoms.machines import Machine

#: the reference machine: the phantoms as the demo model was trained on them
REFERENCE = Machine("reference")
#: depth bins of a brightness profile, and the darkest reference bin still compared
BINS, DARK = 64, 0.02


def images(m: Machine, count: int, seed: int) -> tuple[list[np.ndarray], np.ndarray]:
    """``count`` phantoms as machine ``m`` shows them (half with a lesion), and the truth."""
    rng = np.random.default_rng(seed)
    shown, truth = [], []
    for i in range(count):
        phantom = generate("us", rng, size=m.size, lesion=bool(i % 2))
        shown.append(m.image(phantom.image, rng))
        truth.append(bool(phantom.lesion))
    return shown, np.asarray(truth)


def profile(shown: list[np.ndarray]) -> np.ndarray:
    """Mean brightness by depth (BINS rows, each image's height scaled to one)."""
    depth = np.linspace(0.0, 1.0, BINS)
    return np.mean([np.interp(depth, np.linspace(0.0, 1.0, im.shape[0]), im.mean(axis=1))
                    for im in shown], axis=0)


def ratio_to(reference: np.ndarray, clinic: np.ndarray) -> np.ndarray:
    """The clinic's brightness over the reference's at each depth, bounded to [0.2, 5];
    1 where the reference is too dark to compare."""
    ratio = np.where(reference > DARK, clinic / np.maximum(reference, 1e-6), 1.0)
    return np.clip(np.nan_to_num(ratio, nan=1.0), 0.2, 5.0)


def harmonise_one(image: np.ndarray, ratio: np.ndarray) -> np.ndarray:
    """``image`` divided, row by row, by ``ratio`` at that row's depth."""
    r = np.interp(np.linspace(0.0, 1.0, image.shape[0]), np.linspace(0.0, 1.0, BINS), ratio)
    return np.clip(image / r[:, None], 0.0, 1.0).astype(np.float32)


def harmonise(shown: list[np.ndarray], ratio: np.ndarray) -> list[np.ndarray]:
    """Each image with the clinic's ratio undone."""
    return [harmonise_one(im, ratio) for im in shown]


@dataclass(frozen=True)
class HarmonisedMachine:
    """A clinic's machine whose images come with its ratio undone (the same random draws
    as the machine itself, so the same cases either way)."""

    machine: Machine
    ratio: np.ndarray

    @property
    def name(self) -> str:
        return self.machine.name

    @property
    def size(self) -> tuple[int, int]:
        return self.machine.size

    def image(self, grey: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return harmonise_one(self.machine.image(grey, rng), self.ratio)

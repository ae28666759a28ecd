"""The same phantoms as different clinics' machines would image them.

A clinic's ultrasound machine has its own gain, its own grey curve (gamma), its own speckle
and its own depth attenuation (the far field darker when the time-gain compensation is set
low), and its own frame size. :class:`Machine` applies those to a phantom's grey image in
[0, 1]; :data:`CLINIC_MACHINES` are the five machines of the federated benchmark
(``bench/federated_clinics.py``). Nothing here is a real patient or a real machine.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Machine:
    """How one clinic's machine renders an image."""

    name: str
    gain: float = 1.0
    gamma: float = 1.0
    speckle: float = 0.0  # the multiplicative speckle's relative spread (gamma distribution)
    depth: float = 1.0  # the far field's brightness relative to the near field
    size: tuple[int, int] = (240, 320)

    def image(self, grey: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """``grey`` [H, W] in [0, 1] as this machine shows it (float32 in [0, 1])."""
        x = np.clip(np.asarray(grey, np.float64) * self.gain, 0.0, 1.0) ** self.gamma
        if self.depth != 1.0:
            x = x * np.linspace(1.0, self.depth, x.shape[0])[:, None]
        if self.speckle > 0:
            shape = 1.0 / self.speckle**2
            x = x * rng.gamma(shape, 1.0 / shape, x.shape)
        return np.clip(x, 0.0, 1.0).astype(np.float32)


#: five clinics' machines: the one the demo model was trained for, then four that differ
CLINIC_MACHINES = (
    Machine("clinic-1", speckle=0.1),
    Machine("clinic-2", gain=1.2, gamma=0.9, speckle=0.15),
    Machine("clinic-3", gain=0.85, gamma=1.1, speckle=0.1, depth=0.8, size=(300, 400)),
    Machine("clinic-4", speckle=0.25, depth=0.9, size=(256, 256)),
    Machine("clinic-5", gain=1.1, gamma=1.2, speckle=0.15, depth=0.7, size=(288, 352)),
)

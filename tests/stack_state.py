"""A box holding a CT phantom series, landed shuffled and analysed by the real worker and model.

``build_stack_state`` writes phantom CT series (``phantoms/series.py``:
axial slices 2.5 mm apart with one 3-D lesion) and lands every slice in a shuffled
order through the real ``Lander``, each analysed by the real ``Worker`` with the
bundled demo model (phantom-trained; not for clinical use), as ``tests/viewer_state.py``
does. It keeps the first series (by seed) the box reads as a volume with at least one
3-D lesion and at least one slice without any, so a stack has marked and unmarked
slices. The ids come back in the slices' order along the normal (Image Position). A
single CT phantom image, a study of its own, has no stack.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engine.inference.runner import ModelRunner
from firmware_app.settings.box import Config
from firmware_app.storage.accounts import Accounts
from firmware_app.storage.volumes import study_volumes
from phantoms.dicom import ct_dataset, write_dicom
from phantoms.images import generate
from phantoms.series import PhantomSeries, generate_series, write_series
from tests.viewer_state import CLINICIAN, TECHNICIAN, _land, local_box

SLICES = 8
#: seeds tried for a series the demo model marks on some slices and not on others
SEEDS = 12


@dataclass
class StackState:
    """The box's config, the study's id, its slices' instance ids in position order, and
    the lesion's slices (0-based) as the box read them."""

    config: Config
    study_id: int
    ordered: list[int]
    landed: list[int]
    lesion_slices: list[list[int]] = field(default_factory=list)
    series: PhantomSeries | None = None
    #: a study of one CT image (no stack)
    single_study_id: int = 0


def _series(seed: int) -> PhantomSeries:
    return generate_series(np.random.default_rng(seed), slices=SLICES, size=256,
                           spacing_mm=2.5, lesions=1, diameters_mm=(16.0, 22.0),
                           contrast_hu=(60.0, 80.0), hypodense=0.0)


def build_stack_state(root: Path, runner: ModelRunner) -> StackState:
    """A box under ``root`` with one phantom CT series (see the module docstring)."""
    for seed in range(SEEDS):
        folder = root / f"seed-{seed}"
        box = local_box(Config(), folder / "state", runner)
        series = _series(seed)
        paths = write_series(series, folder / "series", {
            "PatientName": "STACK^PHANTOM", "PatientID": "STACK-1",
            "StudyDescription": "CT SERIES PHANTOM"})
        order = [int(k) for k in np.random.default_rng(seed).permutation(len(paths))]
        ids: dict[int, int] = {}
        for k in order:
            ids[k] = _land(box.lander, paths[k])
            assert box.worker.run_once()
        key, study_id = box.conn.execute("SELECT study_key, id FROM studies").fetchone()
        (volume,) = study_volumes(box.conn, key).series
        position = {instance: k for k, instance in ids.items()}
        marked = {position[i] for lesion in volume.lesions for i in lesion.instance_ids}
        if volume.read_as == "volume" and volume.lesions and len(marked) < SLICES:
            single = write_dicom(ct_dataset(generate("ct", np.random.default_rng(seed))),
                                 folder / "single.dcm")
            _land(box.lander, single)
            assert box.worker.run_once()
            (single_id,) = box.conn.execute(
                "SELECT id FROM studies WHERE id != ?", (study_id,)).fetchone()
            accounts = Accounts(box.conn)
            accounts.add(*TECHNICIAN, "technician")
            accounts.add(*CLINICIAN, "clinician")
            box.conn.close()
            return StackState(
                box.config, study_id, [ids[k] for k in range(SLICES)],
                [ids[k] for k in order],
                [sorted(position[i] for i in lesion.instance_ids) for lesion in volume.lesions],
                series, single_id)
        box.conn.close()
    raise AssertionError(f"no phantom series in {SEEDS} seeds has a 3-D lesion on some slices")

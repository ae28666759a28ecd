"""The box's own checks on a round, before Flower's SecAgg+ mod answers it (decision 0056).

SecAgg+ keeps one box's head from the hospital only while the hospital runs its ServerApp as
shipped. A hospital that changed its ServerApp could ask for a setup that protects little,
or for both kinds of share of the same box (Flower's own mod does not check that the boxes
named alive and the boxes named dropped out are apart: with both, a box's masks are
rebuilt), or for a clipping norm so large that its noise hides nothing. This mod, outermost
in the ClientApp's chain, refuses such instructions with a fixed code (no path, no name):

- the setup: a round of at least :data:`MIN_BOXES` boxes (in a round of one, the box's only
  share is its mask's seed), every box of it holding a share of every mask (shares = boxes),
  and rebuilding one must take more than half of them (2 × threshold > shares);
- the keys: the boxes this box shares its masks with are still at least :data:`MIN_BOXES`
  (a hospital that names fewer after the setup would hold enough shares alone);
- the unmask: no box may be named both alive and dropped out;
- the clipping norm: at most the box's own ceiling (:data:`MAX_CLIPPING_NORM`).
"""

from __future__ import annotations

from flwr.app.message import Context, Message
from flwr.app.message_type import MessageType
from flwr.clientapp.typing import ClientAppCallable
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key, Stage
from flwr.compat.common import recorddict_compat as compat
from flwr.supercore.differential_privacy import KEY_CLIPPING_NORM

from clinibox_common.contracts.federated import MAX_CLIPPING_NORM, MIN_BOXES
from clinibox_common.errors import CliniboxError


class RoundRefused(CliniboxError, ValueError):
    """The round's instructions would expose this box's head; its code says which."""


def check_setup(shares: int, threshold: int, sample: int) -> None:
    """Refuse a setup of too few boxes, or where a mask's shares miss some boxes or a
    minority rebuilds one."""
    if sample < MIN_BOXES:
        raise RoundRefused("secagg_too_few_boxes")
    if shares != sample:
        raise RoundRefused("secagg_shares_not_all_boxes")
    if 2 * threshold <= shares:
        raise RoundRefused("secagg_threshold_too_low")


def check_share_keys(names: list[str]) -> None:
    """Refuse to share this box's masks among fewer than :data:`MIN_BOXES` boxes (``names``:
    the boxes' numbers as the key exchange writes them). Flower reads each as a number, so
    a number written two ways ("7", "07") would count twice here and once there: refused."""
    if any(not name.isdigit() or name != str(int(name)) for name in names):
        raise RoundRefused("secagg_box_named_twice")
    if len(set(names)) < MIN_BOXES:
        raise RoundRefused("secagg_too_few_boxes")


def check_unmask(active: list[int], dead: list[int]) -> None:
    """Refuse an unmask that names a box both alive and dropped out."""
    if set(active) & set(dead):
        raise RoundRefused("secagg_box_alive_and_dropped")


def check_clipping(norm: float) -> None:
    """Refuse a clipping norm above the box's ceiling (or none at all)."""
    if not 0 < norm <= MAX_CLIPPING_NORM:
        raise RoundRefused("clipping_norm_out_of_bounds")


def guard_mod(msg: Message, ctxt: Context, call_next: ClientAppCallable) -> Message:
    """Check a training message's SecAgg+ stage and clipping norm, then pass it on."""
    if msg.metadata.message_type != MessageType.TRAIN:
        return call_next(msg, ctxt)
    configs = msg.content.config_records.get(RECORD_KEY_CONFIGS)
    stage = configs.get(Key.STAGE) if configs is not None else None
    if stage == Stage.SETUP:
        check_setup(int(configs[Key.SHARE_NUMBER]), int(configs[Key.THRESHOLD]),
                    int(configs[Key.SAMPLE_NUMBER]))
    elif stage == Stage.SHARE_KEYS:
        check_share_keys([str(key) for key in configs if key != Key.STAGE])
    elif stage == Stage.UNMASK:
        check_unmask(list(configs[Key.ACTIVE_NODE_ID_LIST]),
                     list(configs[Key.DEAD_NODE_ID_LIST]))
    elif stage == Stage.COLLECT_MASKED_VECTORS:
        fit = compat.recorddict_to_fitins(msg.content, keep_input=True)
        check_clipping(float(fit.config.get(KEY_CLIPPING_NORM, 0.0)))
    return call_next(msg, ctxt)

"""pynetdicom alone, as a reference for `ingest.py`: a Storage SCP whose handler stores
nothing (``--into FOLDER``: pynetdicom writes each data set to a file there as it arrives,
as the box's receiver does, without fsync or a queue row) and answers Success.

    .venv/bin/python -m bench.bare_scp PORT [--into FOLDER]

It shows what pynetdicom itself costs per C-STORE on this machine: the box's durable
receiver cannot be faster than it.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import Verification

from firmware_app.ingest.dicom_scp import ACCEPTED_TRANSFER_SYNTAXES, receive_data_sets_into


def main() -> None:
    """Serve C-STORE on PORT until killed."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("port", type=int)
    parser.add_argument("--into", type=Path, help="receive each data set into a file here")
    args = parser.parse_args()
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    if args.into:
        args.into.mkdir(parents=True, exist_ok=True)
        receive_data_sets_into(args.into)

    def stored(event: evt.Event) -> int:
        if args.into:  # the file pynetdicom wrote: gone again, as if renamed into a spool
            Path(event.dataset_path).unlink()
        return 0x0000

    ae = AE(ae_title="BARE")
    ae.maximum_pdu_size = 256 * 1024  # as the box ([dicom] max_pdu_kb)
    for context in AllStoragePresentationContexts:
        ae.add_supported_context(context.abstract_syntax, ACCEPTED_TRANSFER_SYNTAXES)
    ae.add_supported_context(Verification)
    ae.start_server(("127.0.0.1", args.port), block=True,
                    evt_handlers=[(evt.EVT_C_STORE, stored)])


if __name__ == "__main__":
    main()

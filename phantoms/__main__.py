"""``python -m phantoms``: write phantom DICOM files (``phantoms.dicom.main``)."""

from phantoms.dicom import main

raise SystemExit(main())

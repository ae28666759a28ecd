"""Where the checkout's bundled models are, and the DEMO-ONLY signing key they are signed with.

The demo key signs the phantom-trained demo model (not for clinical use); the box, the hospital
and the converter each need to recognise it, so it is known here, on the floor they share.
"""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
BUNDLED_MODELS_DIR = REPO_ROOT / "models"
DEMO_KEY_NAME = "DEMO-ONLY-model-signing.pub"
DEMO_PUBLIC_KEY = BUNDLED_MODELS_DIR / "keys" / DEMO_KEY_NAME
#: the demo key's id (``signing.key_id``): recognised even where its file is not shipped
DEMO_KEY_ID = "67a82491e5b71bd7"

"""Field types shared by the request models (strict models that still read ids from JSON strings)."""

from __future__ import annotations

import uuid
from typing import Annotated

from pydantic import Strict

# Request models are strict (a "5" is not a 5), but a UUID arrives in JSON as a string.
JsonUuid = Annotated[uuid.UUID, Strict(False)]

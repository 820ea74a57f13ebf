"""`python -m shared.openapi [--check]`: write (or check) the committed OpenAPI documents."""

import sys

from shared.openapi.generate import main

sys.exit(main())

"""``python -m llm_embedder_integrations``: the ``llm-embedder`` command."""

import sys

from .cli import main

sys.exit(main())

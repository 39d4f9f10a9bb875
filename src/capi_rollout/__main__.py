"""``python -m capi_rollout`` is the ``capi-rollout`` CLI."""

from capi_rollout.cli import main

raise SystemExit(main())

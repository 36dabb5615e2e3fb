"""Rules that every layer reads (the upstream allowlist, levels, verdicts, the merge gate): pure, no I/O.

The bottom layer: ``sql/``, ``renderers/``, ``bot/`` and the composition root import it; it imports none
of them.
"""

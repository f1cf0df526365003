"""Checkpoints shipped with vsedvr (installed as the ``vsedvr.models`` package)."""

"""End-to-end scenarios of the demo pipeline on any backend."""

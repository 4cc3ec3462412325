"""Bake-offs: real coding agents in locked-down sandboxes, graded by evalkit."""

"""Bake-offs: run real coding agents on a task set, each in a sandbox, and grade what they did."""

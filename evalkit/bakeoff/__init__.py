"""The bake-off: real coding-agent CLIs in sandboxes, against a model gateway."""

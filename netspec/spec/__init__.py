"""The front end: YAML with positions, `--set` overrides, the pydantic models, located errors."""

"""Back ends: each reads the graph (netspec.ir) and produces one thing; installed as
`netspec.backends`."""

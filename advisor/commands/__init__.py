"""One module per subcommand, each with `register(subparsers)` and `run(args) -> int`.

The CLI imports a command's module only when that command runs, so `advisor plan` never pays
for the wizard's or the runners' imports.
"""

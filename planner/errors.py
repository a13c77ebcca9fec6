"""The one error type for bad input from the user, wherever it is found."""


class InputError(ValueError):
    """Bad input from the user (a flag, a config, an answers file, a dataset, a run folder):
    the CLI prints its message on one line and exits with status 2 (`advisor.cli.main`); the
    wizard shows it beside the field."""

"""The one error type a user can cause in the planner."""


class PlanError(ValueError):
    """Bad input from the user: the CLI prints its message on one line and exits with status 2."""

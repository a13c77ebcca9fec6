"""The user-facing program: CLI, Textual wizard, decision engine."""

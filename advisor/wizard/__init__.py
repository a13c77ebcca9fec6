"""The Textual wizard: interview → recommendation → plan → launch → report, keyboard first."""

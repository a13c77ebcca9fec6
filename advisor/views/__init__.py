"""Rich and Markdown renderers of plans, recommendations and records; no Textual here."""

"""The decision engine: answers, scoring rules, ranking, compute check, guidance and the
interview questions. Pure: no Rich, no Textual, no runners; the views and the wizard render it."""

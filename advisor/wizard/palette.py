"""Command palette entries: the current screen's actions, the same ones its keys run."""

from __future__ import annotations

from functools import partial

from textual.command import DiscoveryHit, Hit, Hits, Provider

HELP = {
    "back": "go back one step (Esc)",
    "recommend": "rank the methods for the answers given so far",
    "next": "go on to the next step",
    "save_answers": "write the answers as YAML for `advisor recommend --answers`",
    "fit": "search for the fastest setup that fits and apply it",
    "launch": "start the run (needs the runners)",
    "save": "write the Markdown record to the path shown",
}


class WizardCommands(Provider):
    """The actions bound on the current screen, by their footer names."""

    def _commands(self) -> list[tuple[str, str, partial]]:
        screen = self.screen
        out = []
        for binding in screen.BINDINGS:
            action = binding.action  # type: ignore[union-attr]
            if not binding.description or screen.check_action(action, ()) is not True:  # type: ignore[union-attr]
                continue
            name = f"{getattr(screen, 'STEP', 'Wizard')}: {binding.description}"  # type: ignore[union-attr]
            out.append((name, HELP.get(action, ""), partial(screen.run_action, action)))
        return out

    async def discover(self) -> Hits:
        for name, help_text, callback in self._commands():
            yield DiscoveryHit(name, callback, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for name, help_text, callback in self._commands():
            score = matcher.match(name)
            if score > 0:
                yield Hit(score, matcher.highlight(name), callback, help=help_text)

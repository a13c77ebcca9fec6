"""GPU counts in one vocabulary: a team's total number of GPUs, laid out as GPUs per node ×
nodes of `GPUS_PER_NODE`. The recommendation's compute check, the wizard's GPU choices and
`advisor plan --fit`'s default search all read it."""

from __future__ import annotations

GPUS_PER_NODE = 8
"""GPUs in one server (an HGX / DGX node of 8), the node size multi-node counts come in."""
MAX_SEARCH_NODES = 4
"""Nodes `--fit` searches, and the wizard offers, when nothing says how many there are."""


def layout(count: int) -> tuple[int, int]:
    """GPUs per node and nodes for a total count: whole nodes of eight when it divides."""
    if count > GPUS_PER_NODE and count % GPUS_PER_NODE == 0:
        return GPUS_PER_NODE, count // GPUS_PER_NODE
    return count, 1


def powers_of_two(limit: int) -> list[int]:
    """1, 2, 4, ... up to `limit`."""
    out, value = [], 1
    while value <= limit:
        out.append(value)
        value *= 2
    return out


def count_choices() -> list[int]:
    """The totals offered as choices: powers of two within a node, then whole nodes up to
    `MAX_SEARCH_NODES` (1, 2, 4, 8, 16, 24, 32)."""
    within = powers_of_two(GPUS_PER_NODE)
    nodes = [GPUS_PER_NODE * n for n in range(2, MAX_SEARCH_NODES + 1)]
    return sorted({*within, GPUS_PER_NODE, *nodes})

"""Checks of the search's integer options: one message shape, naming the option and the accepted range."""
from __future__ import annotations

import numbers

MAX_SEED = 2**32 - 1  # as lightning.seed_everything (numpy's legacy seeding)


def check_int(name: str, value, minimum: int, maximum: int | None = None, none: str | None = None,
              flag: str | None = None) -> int | None:
    """``value`` as an int in ``minimum..maximum`` (numpy integers accepted; bools, floats and strings
    refused), or None where ``none`` says what None means. The message names the option, its
    command-line flag and the accepted range."""
    if value is None and none is not None:
        return None
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        value = int(value)
        if value >= minimum and (maximum is None or value <= maximum):
            return value
    flag = flag or f"--search.{name}"
    accepted = f"an int >= {minimum}" if maximum is None else f"an int in {minimum}..{maximum}"
    raise ValueError(f"{name} ({flag}) must be {accepted}{f', or {none}' if none else ''}; got {value!r}")


# What the options accept, in words: the command line adds it to jsonargparse's type errors.
ACCEPTED = {
    "budget": "an int >= 1, or null (the whole space; exhaustive only)",
    "seed": f"an int in 0..{MAX_SEED}, or null (Lightning's global seed: seed_everything)",
    "seed_everything": f"an int in 0..{MAX_SEED}",
    "batch_size": "an int >= 2, or null (the datamodule's batch_size)",
    "num_classes": "an int >= 1, or null (the datamodule's num_classes)",
    "population": "an int >= 1",
    "sample_size": "an int in 1..population",
    "force": "true or false",
}

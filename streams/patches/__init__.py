"""Every patch of faust-streaming and aiokafka, behind one version gate and one install.

The engine runs on faust-streaming and aiokafka as released, with a few of their attributes
replaced: fixes of bugs that lose state, inputs or offsets, a batch path past faust's
per-record one, and waits cut to what the broker needs. Each concern is one module here, its
docstring saying what it fixes, the upstream issue or the reason, the test that proves it,
and whether it could go upstream; docs/patches.md has the table.

- :mod:`.recovery`: table recovery knows the changelogs' ends, seeks before it resumes, and
  does not wait 10 s for a transaction marker.
- :mod:`.batch_path`: the engine's topics reach it one fetch at a time (:mod:`streams.batches`).
- :mod:`.fetch_wait`: the app's ``fetch_max_wait_ms`` instead of faust's hard-coded 1.5 s.
- :mod:`.gaps`: committed offsets keep up across transaction markers.
- :mod:`.commit`: every producer's transaction committed at once, each only once the broker
  accepted its records (:class:`streams.eos.Outbox`).
- :mod:`.commit_log`: the commit's log table built only if the line is written.
- :mod:`.markers`: the one rule for the broker's ``CONCURRENT_TRANSACTIONS`` (and what Kafka
  3.6+ answers in its place): retry after 3 ms, and keep the retries out of the log.
- :mod:`.outage`: no busy loop while the broker is away.
- :mod:`.transaction_timeout`: the app's transaction timeout for faust's producers.

Only this package imports the faust and aiokafka modules it patches (an import-linter
contract, tests/importlinter_patches.py). Every replacement goes through :mod:`._fence`, which
records it. :func:`install` checks the versions first (:data:`ACCEPTED`): each patch copies or
wraps code of exactly those releases, and pyproject.toml pins them.
"""

from __future__ import annotations

from importlib import metadata
from typing import Final

__all__ = ["ACCEPTED", "PatchVersionError", "check_versions", "install"]

#: The releases every patch here was written against and checked on (pyproject.toml pins
#: exactly these). A new release is accepted only after each patch is checked against it.
ACCEPTED: Final = {"faust-streaming": "0.15.3", "aiokafka": "0.14.0"}


class PatchVersionError(RuntimeError):
    """faust-streaming or aiokafka is not a release the patches were checked against."""


def installed_version(distribution: str) -> str:
    """The installed version of ``distribution`` (what pip installed, not a module's own
    ``__version__``)."""
    return metadata.version(distribution)


def check_versions() -> None:
    """The one version gate.

    Raises:
        PatchVersionError: a release other than :data:`ACCEPTED` is installed (naming each).
    """
    wrong = [
        f"{name} {found} (the patches are checked against {wanted})"
        for name, wanted in ACCEPTED.items()
        if (found := installed_version(name)) != wanted
    ]
    if wrong:
        raise PatchVersionError(
            f"streams.patches does not patch {', '.join(wrong)}: check each patch in "
            "docs/patches.md against the new release, then update ACCEPTED and the pins in "
            "pyproject.toml and constraints.txt"
        )


def install() -> None:
    """Check the versions, then put every patch in place (idempotent; every faust app and
    aiokafka client of the process).

    Raises:
        PatchVersionError: see :func:`check_versions`; nothing is patched then.
    """
    check_versions()
    from streams.patches import (
        batch_path,
        commit,
        commit_log,
        fetch_wait,
        gaps,
        markers,
        outage,
        recovery,
        transaction_timeout,
    )

    for concern in (
        recovery,
        batch_path,
        fetch_wait,
        gaps,
        commit,
        commit_log,
        markers,
        outage,
        transaction_timeout,
    ):
        concern.install()

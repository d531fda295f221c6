"""Errors that carry a message meant for the user, not a traceback, and the exit
statuses of jobs."""

EXIT_FAILED = 1
# The segment stopped early with its progress saved (time budget or a stop signal):
# running the same command again continues it. EX_TEMPFAIL from sysexits.h.
EXIT_PAUSED = 75


class CampaignError(Exception):
    """A mistake in the campaign definition or its inputs.

    The message is a single line that names the file, the row or key, and what is
    allowed; entry points print it and exit non-zero instead of showing a traceback.
    """


class SegmentError(Exception):
    """A segment could not be simulated (for example, the system exploded)."""


class TransferError(Exception):
    """Copying data between scratch and the store failed."""


class DataError(Exception):
    """Stored results are inconsistent (a gap in time, a checksum mismatch)."""

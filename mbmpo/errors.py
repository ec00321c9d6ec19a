"""Errors: `UserError` for mistakes a user can fix (bad config, unknown task, mismatched checkpoint), and
`Abandoned` for an iteration stopped on request."""


class UserError(Exception):
    """A problem in what the user gave us. The CLI prints its message on one line and exits non-zero."""


class Abandoned(Exception):
    """The owner asked for a stop in the middle of an iteration: the iteration is dropped, nothing of it is
    kept but the data saved before the fit (a resumed run trains on that data first)."""

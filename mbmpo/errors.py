"""The one error type for mistakes a user can fix (bad config, unknown task, mismatched checkpoint)."""


class UserError(Exception):
    """A problem in what the user gave us. The CLI prints its message on one line and exits non-zero."""

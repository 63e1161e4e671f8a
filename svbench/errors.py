"""The one exception type for user mistakes: the CLI prints its message as one line, no traceback."""


class SvbenchError(Exception):
    """A bad config, a bad file or a missing model: something the user can fix."""

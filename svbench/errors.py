"""The one exception type for user mistakes: the CLI prints its message as one line, no traceback."""


class SvbenchError(Exception):
    """A bad config, a bad file or a missing model: something the user can fix."""


def report_user_errors(fn, *args):
    """Run fn(*args); a SvbenchError becomes one 'svbench: error: ...' line on stderr and exit status 2."""
    import sys

    try:
        return fn(*args)
    except SvbenchError as exc:
        print(f"svbench: error: {exc}", file=sys.stderr)
        sys.exit(2)

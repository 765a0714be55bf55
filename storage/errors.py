"""The error a user can cause and fix: bad config, data, paths, SQL, run directories.

It lives in the bottom layer so that every package can raise it. The command line prints
`minmax-engine: error: <message>` and exits with status 2; a traceback means a bug.
Messages are one line and name the file, key or line, and what to do.
"""


class UserError(Exception):
    """A problem with the user's input, reported in one line without a traceback."""

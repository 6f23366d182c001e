"""Exception type raised by the sandbox."""


class SandboxError(Exception):
    """The sandbox could not reach the requested state.

    The message always says what failed (which binary, port, node or file) and, where there is one, how to fix it
    (for example the package to install). It never contains the superuser password.
    """

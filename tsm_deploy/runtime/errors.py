"""Errors the user can cause or a check can raise; the CLI turns them into one line and an exit code.

They live in the runtime package so that the runtime is self-contained on the device;
``tsm_deploy.errors`` is the same classes for the compiler side."""


class TsmDeployError(Exception):
    """Bad input: a wrong path, file, target, shape or argument. Exit code 2."""

    exit_code = 2


class CheckFailed(TsmDeployError):
    """A check ran and failed (e.g. parity above tolerance). Exit code 1."""

    exit_code = 1


class WriteFailed(TsmDeployError, OSError):
    """An output could not be written (a full disk, a read-only or missing directory, no permission).
    Exit code 2; an ``OSError`` too, for code that handles those."""

    exit_code = 2


def describe_os_error(exc: OSError) -> str:
    """``No space left on device (/path)``: the reason and the file, without errno's number."""
    reason = exc.strerror or one_line(exc)
    return f"{reason} ({exc.filename})" if getattr(exc, "filename", None) else reason


def one_line(exc: BaseException) -> str:
    """The line of a third-party exception worth showing: TVM and torch put the message last."""
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else type(exc).__name__

"""Errors the user can cause or a check can raise (defined in the self-contained runtime package,
which the device gets without the rest of tsm_deploy)."""

from .runtime.errors import CheckFailed, TsmDeployError, one_line

__all__ = ["CheckFailed", "TsmDeployError", "one_line"]

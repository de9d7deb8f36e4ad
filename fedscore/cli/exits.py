"""How a `fedscore` command ends: its exit codes, and the one line on stderr that names why.

The codes fedscore's errors exit with are their classes' own (fedscore.errors); they are named here
for the contract scripts rely on, which the top-level help prints (EXIT_CODES).
"""
from __future__ import annotations

from fedscore.errors import FedscoreError, InternalError, UnverifiedError

EXIT_OK = 0
EXIT_INTERNAL = InternalError.exit_code       # 1: a bug, no input explains it
EXIT_ERROR = FedscoreError.exit_code          # 2: a problem to fix, named on one line (argparse's bad command line too)
EXIT_UNVERIFIED = UnverifiedError.exit_code   # 3: a ledger, proof or evidence bundle that does not verify
EXIT_PARTIAL = 4        # done, but some applicants were not scored
EXIT_ALERT = EXIT_PARTIAL   # monitor: done, and a monitoring alert fired
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT)
EXIT_TERMINATED = 143   # SIGTERM (128 + SIGTERM)

EXIT_CODES = f"""\
exit codes:
  {EXIT_OK:<4} done
  {EXIT_INTERNAL:<4} internal error: a bug to report
  {EXIT_ERROR:<4} a problem to fix, named on one line: the command line, a job, config or data
       file, a party that does not answer
  {EXIT_UNVERIFIED:<4} a ledger, inclusion proof or evidence bundle that does not verify (the first
       failure is named); an observer's replica with an alarm; status: two members
       hold different blocks at one height of a chain
  {EXIT_PARTIAL:<4} partly done: some applicants were not scored (the first is named; each row's
       error is in the output file); monitor: an alert fired (each is listed)
  {EXIT_INTERRUPTED:<4} interrupted (Ctrl-C)
  {EXIT_TERMINATED:<4} stopped by SIGTERM
  daemons that --local started are stopped on any exit."""


class Terminated(BaseException):
    """SIGTERM, raised in the main thread so it unwinds like Ctrl-C (daemons started here are stopped)."""


def exit_for(error: BaseException) -> tuple[int, str]:
    """The exit code for what ended a command, and the one line on stderr that says so.

    A fedscore error's class owns its code (fedscore.errors), whether raised here or rebuilt from a daemon's answer.
    """
    if isinstance(error, KeyboardInterrupt):
        return EXIT_INTERRUPTED, "fedscore: interrupted"
    if isinstance(error, Terminated):
        return EXIT_TERMINATED, "fedscore: stopped by SIGTERM"
    if isinstance(error, OSError):   # a path that cannot be read or written: the user's to fix
        return EXIT_ERROR, f"fedscore: error: {error}"
    code = error.exit_code if isinstance(error, FedscoreError) else EXIT_INTERNAL
    what = {EXIT_INTERNAL: "internal error", EXIT_UNVERIFIED: "does not verify"}.get(code, "error")
    return code, f"fedscore: {what}: {error}"

"""Every error the orchestrator raises, in one tree, branched by who has to react.

```
OrchestratorError
├── ConfigError              bad input: the user fixes a file, flag or id (exit 2, never retried)
│   ├── PipelineInvalid      a pipeline file with one or more problems, each with file:line:col
│   ├── SettingsInvalid      a bad setting (environment, .env or config file)
│   ├── InputsInvalid        a bad or missing `-i key=value`
│   ├── SecretMissing        a `secrets.NAME` the pipeline uses is not set
│   ├── StateStoreInvalid    a corrupt, foreign, newer or unwritable state database
│   ├── RunNotFound          an unknown run id
│   └── CancelledWork        a plain resume would follow remote work cancelled with the run
├── StepError                raised by a step to end one attempt
│   ├── TransientError       retried by the step's retry policy; the only thing retries catch
│   │   ├── RateLimited      carries the provider's `retry_after`
│   │   ├── ProviderUnavailable
│   │   └── StepTimeout      an attempt ran longer than the step's `timeout`
│   └── PermanentError       fails the step at once
│       ├── JobEnded         the remote job a step follows ended without a result
│       ├── ProviderUnavailableTooLong   unreachable past the step's `max_outage`
│       │                    (steps.together.common)
│       ├── PartsExpired     a multipart upload's part URLs took no more parts: begin again
│       │                    (providers.together.multipart)
│       └── TogetherAPIError the API refused the request for good: status, type, param
│           ├── NotFound     404: no such file, job or model        (providers.together.errors)
│           └── ModelNameTaken                                      (providers.together.errors)
├── StateError               the state store refuses what the caller asked for
│   ├── RunBusy              another live process holds the run's lease (exit code 2)
│   ├── RunStranded          recovered from crashes too often; parked (exit code 2)
│   ├── RunExists            a run with this id is already stored
│   ├── LeaseLost            this process no longer owns the run; its writes are fenced off
│   └── ActionRefused        a web view's button asked for what the run's state forbids now
└── StoreUnavailable         the store did not answer in time; nothing written, try again (75)
```

Outside the tree, errors that a boundary turns into one of the above (or into an HTTP answer)
before anyone sees them:

```
ExpressionError     (ValueError)   a `${{ }}` that does not parse: a problem of PipelineInvalid,
                                   or a step's PermanentError          (definition.expressions)
UnknownStepType     (LookupError)  `uses:` names nothing: a problem of PipelineInvalid
                                                                       (definition.steptypes)
UnreadableFile, NotUTF8            a path that cannot be read as text: the caller's ConfigError
                                                                       (inputfiles)
StepFailed                         a step failed for good, its state committed: the executor
                                   ends the run                        (engine.attempts)
Busy                               an inline open of the SQLite file met another process's
                                   lock: it opens again in a thread, waiting
                                                                       (store.sqlite.connection)
ScorerError, GateError, EvalFileError (ValueError)
                                   a scorer, a `require:` gate or an evaluation file that
                                   cannot be used: a problem of PipelineInvalid at validate,
                                   the evaluate step's PermanentError at run time
                                                                       (evaluation)
TrainerError                       the trainer process could not answer: the local API's 503
                                                                       (trainer.client)
Cancelled                          a training job was cancelled between two steps: it ends
                                   `cancelled`                         (trainer.loop)
APIError, ConnectionDropped        the local API's answer with an error body, and a connection
                                   it drops on purpose (faults)        (localapi.errors)
Refused (PermissionError), BadQuery (ValueError)
                                   the web view's 403 and 400          (web.app, web.params)
_Refused, _Enough, _Unknown        one module's own control flow: a YAML bound crossed
                                   (definition.yamlsource), the problem cap of check-data
                                   (protocol.datacheck), a value only the run will know
                                   (steps.together.pricing)
```

Cancellation is never turned into one of these: anyio's cancellation exception passes through
every handler untouched, so a Ctrl-C always reaches the run executor.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

__all__ = [
    "ActionRefused",
    "CancelledWork",
    "ConfigError",
    "InputsInvalid",
    "JobEnded",
    "LeaseLost",
    "OrchestratorError",
    "PermanentError",
    "PipelineInvalid",
    "Problem",
    "ProviderUnavailable",
    "RateLimited",
    "RunBusy",
    "RunExists",
    "RunNotFound",
    "RunStranded",
    "SecretMissing",
    "SettingsInvalid",
    "StateError",
    "StateStoreInvalid",
    "StepError",
    "StepTimeout",
    "TransientError",
    "first_failure",
    "leaf_errors",
    "shorten",
]


def leaf_errors(error: BaseException) -> Iterator[BaseException]:
    """The errors inside an exception group (and its groups), or the error itself: what a
    caller of a task group reacts to."""
    if isinstance(error, BaseExceptionGroup):
        for inner in error.exceptions:
            yield from leaf_errors(inner)
    else:
        yield error


def first_failure(group: BaseExceptionGroup[BaseException],
                  cancelled: type[BaseException]) -> BaseException | None:
    """The error a failed task group is about: its first that is not a cancellation (its
    other tasks were cancelled by it, or failed the same way); None if all were cancelled."""
    return next((e for e in leaf_errors(group) if not isinstance(e, cancelled)), None)


def shorten(text: str, limit: int = 60) -> str:
    """`text` as a message quotes it: whole up to `limit` characters, else its start and a
    count, so a hostile value (a megabyte of expression, a 5,000-digit number) never turns a
    one-line error into a page."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text):,} characters)"


class OrchestratorError(Exception):
    """Root of every error the orchestrator raises on purpose.

    `exit_code` is what the command line returns when this error ends a command.
    """

    exit_code = 1


class ConfigError(OrchestratorError):
    """Bad input: a file, flag, setting or id the user has to fix. Never retried."""

    exit_code = 2


@dataclass(frozen=True, order=True)
class Problem:
    """One thing wrong with a pipeline file, at a 1-based line and column."""

    line: int
    col: int
    message: str

    def format(self, path: str) -> str:
        return f"{path}:{self.line}:{self.col}: {self.message}"


class PipelineInvalid(ConfigError):
    """A pipeline file has problems; `problems` holds every one found in a single pass."""

    def __init__(self, path: str, problems: Sequence[Problem]) -> None:
        self.path = path
        self.problems = sorted(problems)
        super().__init__("\n".join(p.format(path) for p in self.problems))


class SettingsInvalid(ConfigError):
    """A setting has a value the orchestrator cannot use."""


class InputsInvalid(ConfigError):
    """A pipeline input given with `-i` (or missing) is not usable."""


class SecretMissing(ConfigError):
    """The pipeline references `secrets.NAME` and NAME is not set in the environment."""


class StateStoreInvalid(ConfigError):
    """The state database cannot be used: corrupt, foreign, from a newer version, or unwritable."""


class RunNotFound(ConfigError):
    """No run with this id exists in the state store."""


class CancelledWork(ConfigError):
    """A plain resume of a cancelled run whose remote work (a fine-tune job) was cancelled
    with it: it would only follow a cancelled job and fail. `step` is where to start again
    (`resume RUN --from STEP`: the step that made the job)."""

    def __init__(self, message: str, *, step: str) -> None:
        super().__init__(message)
        self.step = step


class StepError(OrchestratorError):
    """Raised by a step to end the current attempt; subclasses say whether to retry."""


class TransientError(StepError):
    """A fault that may pass: the step is retried per its retry policy.

    `retry_after` (seconds) is a lower bound on the wait before the next attempt, when the
    remote side said how long to back off.
    """

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RateLimited(TransientError):
    """The provider said "too many requests"; `retry_after` says when to come back."""


class ProviderUnavailable(TransientError):
    """The provider could not be reached or answered with a server error."""


class StepTimeout(TransientError):
    """One attempt of a step ran longer than the step's `timeout`."""


class PermanentError(StepError):
    """A fault that retrying cannot fix: the step fails at once."""


class JobEnded(PermanentError):
    """The remote job a step follows ended for good (cancelled, or failed): resuming the step
    alone would follow the same dead job again.

    `param` names the step parameter that holds the job (e.g. `job_id`): the step whose output
    it came from has to run again, which `resume RUN --from <that step>` does. None means the
    step created the job itself, so it has to run again from scratch.
    """

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class StoreUnavailable(OrchestratorError):
    """The state store could not be used in time: another process held the database's write
    lock past `busy_timeout` (or a database server did not answer). Nothing was written; the
    same operation can simply be tried again, so this is neither bad input nor a failed run."""

    exit_code = 75  # EX_TEMPFAIL (sysexits.h): a temporary failure, try again


class StateError(OrchestratorError):
    """The state store refuses an operation because of the run's current state."""


class RunBusy(StateError):
    """Another live process executes this run; a second executor is refused."""

    exit_code = 2


class RunStranded(StateError):
    """The run was recovered from crashed executors more often than allowed and is parked."""

    exit_code = 2


class RunExists(StateError):
    """A run with this id already exists (ids are unique in the store)."""


class LeaseLost(StateError):
    """This process's lease on the run was taken over; its writes are refused (fenced)."""


class ActionRefused(StateError):
    """An action of the web view (cancel, resume, a schedule fired or paused) that the run's
    or schedule's state does not allow now, saying why (the page answers 403)."""

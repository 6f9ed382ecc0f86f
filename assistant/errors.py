"""Exceptions with messages a user can act on; the CLI and web layer turn them into output."""


class AssistantError(Exception):
    """Base class for every error the assistant reports to a user."""


class CorpusError(AssistantError):
    """A corpus file could not be read (not UTF-8, empty, malformed front matter)."""

    def __init__(self, path, reason: str):
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")


class EmptyCorpusError(AssistantError):
    """No usable document was found in the corpus directory."""


class EmbeddingError(AssistantError):
    """The embedding model could not be prepared or loaded."""


class IndexMissingError(AssistantError):
    """There is no index where one was expected."""


class IndexStaleError(AssistantError):
    """The corpus changed since the index was built and rebuilding is disabled."""


class IndexMismatchError(AssistantError):
    """The index was built with another embedding model or dimension."""


class IndexCorruptError(AssistantError):
    """An index file is unreadable or inconsistent."""


class InvalidQuestionError(AssistantError):
    """The question is empty, too long or contains control characters."""


class QuestionTooLongError(InvalidQuestionError):
    """The question is longer than the configured limit."""


class EvaluationError(AssistantError):
    """An evaluation cannot run as asked: no question in the split, an unreadable baseline."""


class FeedbackUnavailableError(AssistantError):
    """Feedback cannot be stored right now (the database is down, the log is full); nothing was saved."""


class FeedbackTokenError(AssistantError):
    """A rating names no answer this service gave: a forged, damaged or expired answer token."""

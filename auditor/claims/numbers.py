"""Numbers as printed: moved to `auditor.submission.numbers` (the Submission layer reads them)."""

from auditor.submission.numbers import Printed, agree, agree_mean, printed  # noqa: F401

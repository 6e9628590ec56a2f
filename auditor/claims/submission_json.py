"""What a submission.json claims: moved to `auditor.submission.claimed` (the Submission layer)."""

from auditor.submission.claimed import (  # noqa: F401
    JsonClaims, SeedClaim, load_json_text, parse_claims,
)

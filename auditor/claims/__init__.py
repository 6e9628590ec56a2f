"""`auditor claims`: what a submission claims, checked against its own logs and files."""

"""`auditor smoke`: sandboxed CPU import and instantiation of a submission's model."""

"""`auditor smoke`: sandboxed CPU import and instantiation of a submission's model.

The library entry is `smoke_path(path, SmokeOptions(...)) -> SmokeResult`. Importing this
package never imports torch: submission code and torch run in a child process only.
"""

from auditor.smoke.runner import FAILURE_KINDS, SmokeOptions, SmokeResult, UnreadablePath, smoke_path
from auditor.smoke.sandbox import Limits

__all__ = ["FAILURE_KINDS", "Limits", "SmokeOptions", "SmokeResult", "UnreadablePath", "smoke_path"]

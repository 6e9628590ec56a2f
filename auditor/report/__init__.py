"""Renderers: every command's results as text or JSON, read from the shared result model.

    text.py   for a terminal: control characters from submission text are escaped
    json.py   `{"results": [...]}`, valid JSON whatever the results hold

(Markdown and SARIF renderers read the same objects.)
"""

from __future__ import annotations

import enum


class OutputFormat(str, enum.Enum):
    text = "text"
    json = "json"

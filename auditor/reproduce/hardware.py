"""Which hardware a rerun ran on, and how its wallclock translates to 8xH100 seconds.

The 600 s limits are for 8xH100 SXM. On other hardware, `--calibrate` first runs the
reference model (reference_model/) for a few steps on the same machine with the same
process count; the factor is the reference's documented 8xH100 ms/step divided by the
ms/step measured here. Estimated 8xH100 seconds = seconds measured here x factor, always
labelled as an estimate: it assumes the submission speeds up like the reference does.
The 8xH100 figure is read from reference_model/calibration.json
(`{"step_avg_ms_8xh100": X, "source": "..."}`); where no measured figure exists the factor
is unknown and we say so rather than invent one.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from auditor.reproduce.result import Calibration, Estimate, Hardware

REFERENCE_DIR = Path(__file__).resolve().parents[2] / "reference_model"
CALIBRATION_FILE = "calibration.json"
CALIBRATION_STEPS = 30


def detect_hardware(gpus_per_node: int, nodes: int) -> Hardware:
    """The local accelerators (torch.cuda), and whether this run is the challenge's 8xH100."""
    try:
        import torch

        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        names = [torch.cuda.get_device_name(i) for i in range(count)]
    except Exception:  # noqa: BLE001 - no torch, or a broken driver: treat as CPU
        count, names = 0, []
    if count == 0:
        return Hardware("CPU (no CUDA device)", 0, False)
    groups: dict[str, int] = {}
    for name in names:
        groups[name] = groups.get(name, 0) + 1
    description = ", ".join(f"{n} x {name}" for name, n in groups.items())
    used = names[:gpus_per_node]
    is_reference = nodes == 1 and gpus_per_node == 8 and len(used) == 8 and all("H100" in n for n in used)
    return Hardware(description, count, is_reference)


def reference_step_ms(reference_dir: Path = REFERENCE_DIR) -> tuple[float | None, str]:
    """The reference model's documented 8xH100 ms/step and where it comes from, or (None, why not)."""
    path = reference_dir / CALIBRATION_FILE
    if not path.is_file():
        return None, (f"no measured 8xH100 ms/step of the reference model ({path.relative_to(path.parents[1])} "
                      "absent), so the factor is unknown")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        value = float(data["step_avg_ms_8xh100"])
    except (OSError, ValueError, KeyError, TypeError):
        return None, f"{path.name} has no readable step_avg_ms_8xh100, so the factor is unknown"
    if not value > 0:
        return None, f"{path.name} gives a non-positive step_avg_ms_8xh100, so the factor is unknown"
    return value, str(data.get("source") or path.name)


_STEP_AVG = re.compile(r"\bstep:(\d+)/\d+\s+train_loss:\S+\s+train_time:\S+\s+step_avg:\s*(\d+(?:\.\d+)?)ms")


def last_step_avg_ms(log_text: str) -> float | None:
    matches = list(_STEP_AVG.finditer(log_text))
    return float(matches[-1].group(2)) if matches else None


def calibration_from_log(log_text: str, log_path: str | None, reference_dir: Path = REFERENCE_DIR) -> Calibration:
    local = last_step_avg_ms(log_text)
    reference, source = reference_step_ms(reference_dir)
    if local is None:
        return Calibration(True, None, "the calibration run printed no step_avg line, so the factor is unknown",
                           None, reference, log_path)
    if reference is None:
        return Calibration(True, None, f"measured {local:.2f} ms/step here; {source}", local, None, log_path)
    factor = reference / local
    how = (f"reference model: {reference:g} ms/step on 8xH100 ({source}) / {local:.2f} ms/step measured here "
           f"with the same process count")
    return Calibration(True, factor, how, local, reference, log_path)


def estimate(seconds: float | None, factor: float | None) -> Estimate:
    if seconds is None or factor is None:
        return Estimate(seconds)
    return Estimate(seconds, factor, seconds * factor)

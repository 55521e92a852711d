"""Policy files: the model, the loader with file:line errors, named conditions, the engine."""

from proxy.policy.engine import decide
from proxy.policy.loader import load_policies
from proxy.policy.model import (
    STAGES,
    Classifier,
    Policy,
    Rule,
    Silence,
    Stream,
    Threshold,
    lifecycle_stage,
)

__all__ = ["STAGES", "Classifier", "Policy", "Rule", "Silence", "Stream", "Threshold", "decide",
           "lifecycle_stage", "load_policies"]

"""The node's extension API (pluggy): hook specs, `hookimpl` for plugin authors, the pipeline's value types.

A plugin imports from here only: `from node.extensions import hookimpl, Signal, Decision`.
"""

from node.extensions.hookspecs import ENTRY_POINT_GROUP, hookimpl, hookspec
from node.extensions.types import (
    Applicant,
    Application,
    BookedLoan,
    Decision,
    FraudConfirmation,
    Reason,
    RiskScore,
    Signal,
)

__all__ = ["ENTRY_POINT_GROUP", "Applicant", "Application", "BookedLoan", "Decision", "FraudConfirmation", "Reason",
           "RiskScore", "Signal", "hookimpl", "hookspec"]

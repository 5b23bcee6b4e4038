"""The one exception the planner raises."""

from __future__ import annotations


class PlanError(ValueError):
    """The request itself is wrong (unknown node, ambiguous name, bad setting).

    Raised for what the user must fix in the spec; the message is meant for a condition as is.
    Cluster state that may change by itself (a target offline or cordoned, no memory) is never
    raised: it is reported inside the plan, so a later sync can succeed without a spec change.
    """

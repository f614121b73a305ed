"""Auto-approval by policy: the rules file, their evaluation, reload and shadow figures.

``rules``     the TOML file, validated (every error with its line)
``evaluate``  every rule against a new request, each failed condition a reason
``holder``    the rules in use now, re-read when the file changes
``shadow``    how each rule's verdicts compare with what people decided
"""

from signoff.policy.evaluate import APPROVED, NONE, PAUSED, Facts, Lookups, Verdict, evaluate
from signoff.policy.holder import PolicyHolder
from signoff.policy.rules import Policy, PolicyError, Rule, parse_policy, read_policy
from signoff.policy.shadow import shadow_figures

__all__ = [
    "APPROVED",
    "NONE",
    "PAUSED",
    "Facts",
    "Lookups",
    "Policy",
    "PolicyError",
    "PolicyHolder",
    "Rule",
    "Verdict",
    "evaluate",
    "parse_policy",
    "read_policy",
    "shadow_figures",
]

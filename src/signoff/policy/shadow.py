"""Shadow figures: how each rule's verdicts compare with what people decided.

Over the requests that ended in a window (pending ones do not count): of those a rule
held for (``would_approve``), people approved (``agreed``), rejected (``disagreed``), or
neither: expired or cancelled (``undecided``). ``missed`` counts requests whose action the
rule's ``actions`` match, that it did not hold for, and that people approved. A request
the policy approved itself is in ``would_approve`` only.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from signoff.policy.record import decode_record
from signoff.policy.rules import Policy

HUMAN_APPROVED, HUMAN_REJECTED = "human_approved", "human_rejected"
UNDECIDED = frozenset({"timeout_ignored", "cancelled"})


@dataclass
class Figures:
    rule: str
    mode: str
    would_approve: int = 0
    agreed: int = 0
    disagreed: int = 0
    undecided: int = 0
    missed: int = 0
    disagreements: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        decided = self.agreed + self.disagreed
        return {
            "rule": self.rule, "mode": self.mode, "would_approve": self.would_approve,
            "agreed": self.agreed, "disagreed": self.disagreed, "undecided": self.undecided,
            "missed": self.missed,
            "agreement_rate": None if decided == 0 else self.agreed / decided,
            "disagreements": list(self.disagreements),
        }


def shadow_figures(policy: Policy | None, ended: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """``ended``: rows with id, action, disposition and policy (the evaluation at create,
    as stored), oldest first. Rules are those of the current policy, in file order."""
    rules = [] if policy is None else list(policy.rules)
    figures = {r.name: Figures(r.name, r.mode) for r in rules}
    for row in ended:
        evaluation = decode_record(row["policy"])
        if not evaluation:
            continue
        held = {e["rule"]: bool(e["holds"]) for e in evaluation.get("evaluations", [])}
        disposition = row["disposition"]
        for rule in rules:
            f = figures[rule.name]
            if held.get(rule.name):
                f.would_approve += 1
                if disposition == HUMAN_APPROVED:
                    f.agreed += 1
                elif disposition == HUMAN_REJECTED:
                    f.disagreed += 1
                    f.disagreements.append(str(row["id"]))
                elif disposition in UNDECIDED:
                    f.undecided += 1
            elif (rule.name in held and disposition == HUMAN_APPROVED
                  and rule.matches_action(row["action"])):
                f.missed += 1
    return {"rules": [figures[r.name].as_json() for r in rules]}

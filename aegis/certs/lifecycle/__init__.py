"""The certificate lifecycle: what Aegis obtains, renews and retires, for every source.

* :mod:`.demand` — which name sets are wanted, from hosts and certificates;
* :mod:`.engine` — :class:`LifecycleEngine`, the state machine and its one timer;
* :mod:`.transitions` — the store side of each transition;
* :mod:`.policy` — renewal times; :mod:`.budget` — the limits kept towards each CA;
* :mod:`.issuers` — building every source's issuer from one context.

See docs/lifecycle.md.
"""

from aegis.certs.lifecycle.budget import FailureBudget, RequestBudget
from aegis.certs.lifecycle.demand import Demand, DemandInputs
from aegis.certs.lifecycle.engine import RETRY_INTERVALS, LifecycleEngine
from aegis.certs.lifecycle.issuers import ChallengeResponders, IssuerContext, build_issuers
from aegis.certs.lifecycle.policy import lifetime_renewal_time, renewal_time

__all__ = [
    "RETRY_INTERVALS",
    "ChallengeResponders",
    "Demand",
    "DemandInputs",
    "FailureBudget",
    "IssuerContext",
    "LifecycleEngine",
    "RequestBudget",
    "build_issuers",
    "lifetime_renewal_time",
    "renewal_time",
]

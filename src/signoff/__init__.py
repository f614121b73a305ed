"""signoff: a human sign-off gate in front of automated incident remediation."""

__version__ = "0.1.0"

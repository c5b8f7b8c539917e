"""Generated wire contract (python -m sssd.codegen)."""

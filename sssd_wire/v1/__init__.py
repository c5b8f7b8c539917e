"""Generated from proto/sssd_wire/v1/datastore.proto by ``python -m sssd.codegen`` (do not edit)."""

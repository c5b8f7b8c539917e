"""Generated from proto/sssd/datastore/v1/datastore.proto by python -m sssd.codegen."""

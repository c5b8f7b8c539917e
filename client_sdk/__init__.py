"""sssd client SDK: talks to the datastore service and drafts token trees.

Drafting modules import no torch; only verification and the reference decoder do.
"""

"""How reconciler reaches hosts: `base` (the Connection protocol), `ssh` (asyncssh), `session` (one connection per
host, kept), `fake` (in-memory hosts for tests and the fleet benchmark).

asyncssh still imports cryptography's DSA classes, and cryptography warns about them on import, ten lines on every
command's stderr: reconciler never offers DSA keys, so that one warning is silenced here, before asyncssh loads.
"""

import warnings

warnings.filterwarnings("ignore", message="DSA is deprecated", module=r"asyncssh\.")

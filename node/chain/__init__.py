"""The only package that talks to the chain: web3, eth-account and the contracts' clients live here."""

import sys

# py-ecc, which eth-keyfile imports (and with it web3 and eth-account), raises the interpreter's recursion limit to
# 100,000 when it is first imported, for recursive code the node never calls. At that limit a deeply nested JSON
# document (a 200 KB request body of "[" characters, well within the API's size limit) overflows the C stack while
# it is parsed and kills the whole node process, where the default limit raises RecursionError and the request is
# refused. Importing it here, before any module of this package, lets the limit be put back.
_recursion_limit = sys.getrecursionlimit()
import eth_keyfile  # noqa: E402, F401

sys.setrecursionlimit(_recursion_limit)

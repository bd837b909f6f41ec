# The compiled kernels (cpp/src/bindings.cpp): private, called only by the fastnorm package, which documents and
# types the public API; every name here is typed as Any.
from typing import Any

def __getattr__(name: str) -> Any: ...

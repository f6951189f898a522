"""The store layer: one LevelDB database split into named trees (see trees.py)."""

from .db import Snapshot, Store, StoreOptions, WriteBatch
from .errors import StoreCorruptError, StoreError, StoreInUseError, StoreSchemaError
from .keys import SEP, from_u64_be, join, split, u64_be
from .tree import Tree, TreeView
from .trees import TREES

__all__ = [
    "SEP",
    "TREES",
    "Snapshot",
    "Store",
    "StoreCorruptError",
    "StoreError",
    "StoreInUseError",
    "StoreOptions",
    "StoreSchemaError",
    "Tree",
    "TreeView",
    "WriteBatch",
    "from_u64_be",
    "join",
    "split",
    "u64_be",
]

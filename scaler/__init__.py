"""shoal.scaler: pure decision logic. No I/O, no asyncio, no clock reads."""

from scaler.backoff import BackoffEntry, BackoffPolicy, BackoffTable, FailureKind
from scaler.binpack import Packing, binpack
from scaler.model import *  # noqa: F403
from scaler.model import __all__ as _model_all
from scaler.planner import plan
from scaler.shape import NodeTypeSpec, Shape, parse_node_types

__all__ = [
    "BackoffEntry",
    "BackoffPolicy",
    "BackoffTable",
    "FailureKind",
    "NodeTypeSpec",
    "Packing",
    "Shape",
    "binpack",
    "parse_node_types",
    "plan",
    *_model_all,
]

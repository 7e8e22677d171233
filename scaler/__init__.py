"""shoal.scaler: pure decision logic. No I/O, no asyncio, no clock reads."""

from shoal.scaler.backoff import BackoffEntry, BackoffPolicy, BackoffTable, FailureKind
from shoal.scaler.binpack import Packing, binpack
from shoal.scaler.model import *  # noqa: F403
from shoal.scaler.model import __all__ as _model_all
from shoal.scaler.planner import plan
from shoal.scaler.shape import NodeTypeSpec, Shape, parse_node_types

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

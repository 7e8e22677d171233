"""shoal.scaler: pure decision logic. No I/O, no asyncio, no clock reads."""

from scaler.backoff import BackoffEntry, BackoffPolicy, BackoffTable, FailureKind
from scaler.model import *  # noqa: F403
from scaler.model import __all__ as _model_all
from scaler.shape import NodeTypeSpec, Shape, parse_node_types

__all__ = ["NodeTypeSpec", "Shape", "parse_node_types", *_model_all]
__all__ += ["BackoffEntry", "BackoffPolicy", "BackoffTable", "FailureKind"]

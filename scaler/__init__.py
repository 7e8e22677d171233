"""shoal.scaler: pure decision logic. No I/O, no asyncio, no clock reads."""

from scaler.backoff import BackoffEntry, BackoffPolicy, BackoffTable, FailureKind
from scaler.model import *  # noqa: F403
from scaler.model import __all__ as _model_all
from scaler.shape import NodeTypeSpec, Shape, parse_node_types

__all__ = ["NodeTypeSpec", "Shape", "parse_node_types", *_model_all]
__all__ += ["BackoffEntry", "BackoffPolicy", "BackoffTable", "FailureKind"]
__all__ += ["plan"]  # noqa: F405 (module __getattr__ below)


def __getattr__(name: str) -> object:
    # ``plan`` is imported on first use: it needs scaler.binpack, and ``import scaler``
    # must not fail for code that only wants the model while binpack is absent.
    if name == "plan":
        from scaler.planner import plan

        return plan
    raise AttributeError(f"module 'scaler' has no attribute {name!r}")

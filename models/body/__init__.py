"""Body models behind one interface; `get_body()` picks the configured one."""
from models.body.registry import get_body

__all__ = ["get_body"]

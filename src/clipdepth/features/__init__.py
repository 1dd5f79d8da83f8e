from .memory import EncodedSplit, encode_split

__all__ = ["EncodedSplit", "encode_split"]

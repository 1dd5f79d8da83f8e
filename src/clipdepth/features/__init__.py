from .memory import EncodedSplit, OnTheFlySplit, encode_split

__all__ = ["EncodedSplit", "OnTheFlySplit", "encode_split"]

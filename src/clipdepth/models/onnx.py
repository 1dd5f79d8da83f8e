"""ONNX export shared by the models that export (``DepthModel.export_onnx``): whether the ``onnx``
extra is installed and which opsets can be written and checked here, said before any work."""

from __future__ import annotations

from ..errors import ConfigError

# torch's exporter translates to opset 18 (torchlib's) and converts from there; onnxscript's
# converter goes no lower (a lower opset came out as an opset-18 file).
MIN_OPSET = 18
INSTALL_HINT = 'pip install -e ".[onnx]" in the clipdepth repository'


def require_onnx() -> None:
    """Raise a one-line ConfigError when onnx or onnxruntime (or onnxscript) is missing."""
    missing = []
    for name in ("onnx", "onnxruntime", "onnxscript"):
        try:
            __import__(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise ConfigError(f"ONNX export needs {', '.join(missing)}, which is not installed: {INSTALL_HINT}")


def _onnxruntime_opset() -> int:
    """The newest ai.onnx opset onnxruntime has kernels for (the latest version any kernel starts at)."""
    from onnxruntime.capi import _pybind_state

    kernels = _pybind_state.get_all_opkernel_def()
    return max(kernel.version_range[0] for kernel in kernels if kernel.domain in ("", "ai.onnx"))


def supported_opsets() -> range:
    """The opsets ``export_onnx`` can write and check here: ``MIN_OPSET`` to the newest that
    onnxscript's version converter (which torch's exporter converts with), onnx and onnxruntime all
    know: 18 to 25 with onnxscript 0.7, onnx 1.23 and onnxruntime 1.32."""
    import onnx

    try:
        from onnxscript.version_converter._version_converter import SUPPORTED_MAX_ONNX_OPSET as converter_max
    except ImportError:  # an onnxscript that does not say: the check of the written file still holds
        converter_max = onnx.defs.onnx_opset_version()
    return range(MIN_OPSET, min(converter_max, onnx.defs.onnx_opset_version(), _onnxruntime_opset()) + 1)


def check_opset(opset: int) -> None:
    """ConfigError (setting ``opset``) unless ``opset`` is one of ``supported_opsets``: said before
    any work, instead of a file of another opset or onnxruntime's error after it."""
    opsets = supported_opsets()
    if opset not in opsets:
        raise ConfigError(
            f"opset {opset} cannot be exported and checked here: torch's exporter and onnxruntime "
            f"support opsets {opsets.start} to {opsets.stop - 1}",
            setting="opset",
        )

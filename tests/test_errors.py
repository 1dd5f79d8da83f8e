"""clipdepth's errors are also the built-in exceptions of their kind, and stay one line."""

import pickle

import pytest

from clipdepth.errors import CheckpointError, ClipdepthError, ConfigError, DataError, EncoderLoadError
from clipdepth.io.atomic import atomic_path


@pytest.mark.parametrize(
    "kind, builtin", [(ConfigError, ValueError), (DataError, OSError), (CheckpointError, OSError), (EncoderLoadError, OSError)]
)
def test_each_error_is_the_builtin_of_its_kind(kind, builtin):
    error = kind("a.png: not a readable image", setting="image")
    assert isinstance(error, builtin) and isinstance(error, ClipdepthError)
    assert str(error) == "a.png: not a readable image" and error.setting == "image"
    # as a DataLoader worker hands it to the main process: the same type and line
    back = pickle.loads(pickle.dumps(error))
    assert type(back) is kind and str(back) == "a.png: not a readable image"


def test_a_clipdepth_error_inside_a_write_is_not_reworded_as_the_writes_failure(tmp_path):
    with pytest.raises(DataError) as raised:
        with atomic_path(tmp_path / "a.png"):
            raise DataError("b.png: over the limit")  # an OSError now, but no failure of writing a.png
    assert str(raised.value) == "b.png: over the limit"

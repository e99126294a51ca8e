"""The list of names a layer may not take is the compiled module's attributes, exactly."""

from netspec.backends.torch_module import Network
from netspec.backends.torch_names import RESERVED


def test_reserved_names_are_the_public_attributes_of_the_module():
    assert frozenset(n for n in dir(Network) if not n.startswith("_")) == RESERVED

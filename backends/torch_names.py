"""Names a layer may not take, as they are attributes of the compiled torch module.

Kept as a list, so that `netspec build` can check a spec without importing torch (seconds);
a test holds it equal to the public attributes of `torch_module.Network` under the pinned torch.
"""

from __future__ import annotations

from netspec.errors import Problem, SpecError
from netspec.spec.model import Spec

RESERVED = frozenset(
    {
        "T_destination",
        "add_module",
        "apply",
        "bfloat16",
        "buffers",
        "call_super_init",
        "children",
        "compile",
        "cpu",
        "cuda",
        "double",
        "dump_patches",
        "eval",
        "extra_repr",
        "float",
        "forward",
        "get_buffer",
        "get_extra_state",
        "get_parameter",
        "get_submodule",
        "half",
        "ipu",
        "load_state_dict",
        "modules",
        "mtia",
        "named_buffers",
        "named_children",
        "named_modules",
        "named_parameters",
        "parameters",
        "register_backward_hook",
        "register_buffer",
        "register_forward_hook",
        "register_forward_pre_hook",
        "register_full_backward_hook",
        "register_full_backward_pre_hook",
        "register_load_state_dict_post_hook",
        "register_load_state_dict_pre_hook",
        "register_module",
        "register_parameter",
        "register_state_dict_post_hook",
        "register_state_dict_pre_hook",
        "requires_grad_",
        "set_extra_state",
        "set_submodule",
        "share_memory",
        "state_dict",
        "to",
        "to_empty",
        "train",
        "type",
        "xpu",
        "zero_grad",
    }
)


def check_names(spec: Spec) -> None:
    """Layer names become attributes of the module, so torch's own names cannot be used."""
    problems = [
        Problem(
            spec.where(("layers", i, "name")),
            f"'{layer.name}' is the name of a torch module attribute; rename the layer",
            spec.layer_context(i),
        )
        for i, layer in enumerate(spec.layers)
        if layer.name in RESERVED
    ]
    if problems:
        raise SpecError(problems)

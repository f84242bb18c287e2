"""User code that aotc's frontend must refuse, each with a marker comment `# ERR name` on the
line the error must point at (tests/test_frontend_errors.py finds the lines by marker)."""
import torch
from torch import nn

from aotc.compiler import bounded


def inplace_method(x):
    if x.sum() > 0:
        x.add_(1)  # ERR inplace_method
    return x


def augmented_assignment(x):
    y = x * 2
    if x.sum() > 0:
        y += 1  # ERR augmented_assignment
    return y


def item_assignment(x):
    if x.sum() > 0:
        x[0] = 0.0  # ERR item_assignment
    return x


collected = []


def list_append(x):
    if x.sum() > 0:  # (the if)
        collected.append(x)  # ERR list_append
        x = x + 1
    return x


class AttributeWrite(nn.Module):
    def forward(self, x):
        if x.mean() > 0:
            self.last = x  # ERR attribute_write
        return x


def helper_that_mutates(v):
    v.mul_(2)  # ERR helper_inplace
    return v


def inplace_in_helper(x):
    if x.sum() > 0:
        x = helper_that_mutates(x)
    return x


def shape_mismatch(x):
    if x.sum() > 0:  # ERR shape_mismatch
        y = x[:2]
    else:
        y = x
    return y


def dtype_mismatch(x):
    if x.sum() > 0:  # ERR dtype_mismatch
        y = x.long()
    else:
        y = x
    return y


def return_mismatch(x):
    if x.sum() > 0:  # ERR return_mismatch
        return x
    return None


def one_branch_variable(x):
    if x.sum() > 0:  # ERR one_branch_variable
        y = x * 2
    return y + 1  # USE one_branch_variable


def unbounded_while(x):
    while x.sum() < 100:  # ERR unbounded_while
        x = x * 2
    return x


def bound_too_small(x):
    while bounded(x.sum() < 100, max_iters=2):  # ERR bound_too_small
        x = x * 2
    return x


def return_in_with(x):
    with torch.no_grad():
        if x.sum() > 10:  # ERR return_in_with
            return x
        x = x * 2
    return x


def return_in_try_in_loop(x):
    for _ in range(4):
        try:
            if x.sum() > 10:  # ERR return_in_try_in_loop
                return x
        finally:
            x = x * 2
    return x


def break_in_try(x):
    for _ in range(4):
        try:
            if x.sum() > 10:  # ERR break_in_try
                break
        finally:
            x = x * 2
    return x


def while_true_with_tensor_break(x):
    while True:  # ERR while_true_with_tensor_break
        x = x * 2
        if x.sum() > 10:
            break
    return x


def item_call(x):
    n = x.sum().item()  # ERR item_call
    return x * n


def numpy_call(x):
    a = x.numpy()  # ERR numpy_call
    return torch.from_numpy(a) + 1


def bool_call(x):
    positive = bool(x.sum() > 0)  # ERR bool_call
    return x if positive else -x


def int_call(x):
    k = int(x.argmax())  # ERR int_call
    return x[k]


def assert_on_tensor(x):
    assert (x > -100).all()  # ERR assert_on_tensor
    return x * 2


def raising_branch(x):
    if x.sum() < 0:  # ERR raising_branch
        raise ValueError("negative input")
    return x


def ambiguous_condition(x):
    if x > 0:  # ERR ambiguous_condition
        return x
    return -x


def helper_reads_item(v):
    return v.max().item()  # ERR helper_item


def item_in_helper(x):
    return x / helper_reads_item(x)


def make_unbounded_module():
    """A factory for the CLI tests."""
    class Loop(nn.Module):
        def forward(self, x):
            return unbounded_while(x)
    return Loop()


def make_item_module():
    class Item(nn.Module):
        def forward(self, x):
            return item_call(x)
    return Item()


@torch.no_grad()  # torch's decorator wraps the function in library code, which aotc does not convert
def decorated(x):
    if x.sum() > 0:  # ERR decorated
        return x
    return -x


def calls_decorated(x):
    return decorated(x) * 2


class LayerAfterBreak(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.ModuleList([nn.Linear(3, 3) for _ in range(2)])

    def forward(self, x):
        for layer in self.layers:  # ERR layer_after_break
            x = layer(x)
            if x.sum() > 0:
                break
        return layer(x)  # USE layer_after_break


def swallowed_item(x):
    try:
        n = x.sum().item()  # ERR swallowed_item
    except Exception:  # catches aotc's error too: tracing still refuses the model
        n = 1.0
    return x * n


def shape_bug(x):
    w = torch.ones(5, 5)
    return x @ w  # ERR shape_bug


history = []


def remember(v):
    history.append(v)  # ERR helper_append
    return v * 2


def append_in_helper(x):
    if x.sum() > 0:
        x = remember(x)
    return x


def append_in_nested_helper(x):
    seen = []

    def note(v):
        seen.append(v)  # ERR nested_helper_append
        return v + 1
    if x.sum() > 0:
        x = note(x)
    return x

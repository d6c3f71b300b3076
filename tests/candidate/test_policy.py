"""The candidate policy: what load_candidate accepts, what it refuses and with which check name."""
from __future__ import annotations

import pytest
import torch

from lossforge.candidate.namespace import _guarded_getattr, load_candidate
from lossforge.candidate.policy import PolicyViolation

SIG = "policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta"


def fn_src(body: str, name: str = "my_loss", preamble: str = "") -> str:
    lines = "\n".join("    " + line for line in body.strip("\n").splitlines())
    return f"{preamble}def {name}({SIG}):\n{lines}\n"


DPO = '''"""A DPO candidate."""
import math
import torch
import torch.nn.functional as F


def dpo(policy_chosen_logps: torch.Tensor, policy_rejected_logps: torch.Tensor,
        reference_chosen_logps: torch.Tensor, reference_rejected_logps: torch.Tensor,
        beta: float = 0.1) -> torch.Tensor:
    """-log sigmoid(beta * margin)."""
    logits = (policy_chosen_logps - policy_rejected_logps) - (reference_chosen_logps - reference_rejected_logps)
    return -F.logsigmoid(beta * logits)
'''

DISCOPOP = '''from torch.nn import functional as F
import torch

def discopop(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta):
    tau = 0.05
    logits = beta * ((policy_chosen_logps - policy_rejected_logps) - (reference_chosen_logps - reference_rejected_logps))
    gate = torch.sigmoid(logits / tau)
    logistic = -F.logsigmoid(logits)
    exp_part = torch.exp(-logits.clamp(min=-50.0))
    return logistic * (1.0 - gate) + exp_part * gate
'''

# Ordinary tensor-code idioms that must work under RestrictedPython's rewriting.
IDIOMS = fn_src('''
margin = (policy_chosen_logps - policy_rejected_logps) - (reference_chosen_logps - reference_rejected_logps)
z = beta * margin
sq = z ** 2
first = z[0:1]
abs_z = torch.where(z > 0, z, -z)
total = 0
for i in range(3):
    total += i
a, b = (1.0, 2.0)
weights = [w * 0.5 for w in (1.0, 2.0)]
for k, w in enumerate(weights):
    total = total + k * w
out = -F.logsigmoid(z) + 0.0 * sq.mean() + 0.0 * first.sum() + 0.0 * abs_z
out[0] = out[0] * 1.0
mask = out > 100.0
out = out.masked_fill(mask, 100.0)
_, idx = torch.sort(z)
return out + 0.0 * math.log(2.0) * total * a * b * max(1, len(weights)) * float(idx.numel())
''')


def test_good_candidates_load_and_compute() -> None:
    x = torch.linspace(-50.0, -1.0, 6)
    for code, name in ((DPO, "dpo"), (DISCOPOP, "discopop"), (IDIOMS, "my_loss")):
        loaded = load_candidate(code)
        assert loaded.name == name
        out = loaded.fn(x, x - 1.0, x - 0.5, x - 0.2, 0.1)
        assert out.shape == (6,) and torch.isfinite(out).all()
    expected = -torch.nn.functional.logsigmoid(0.1 * ((x - (x - 1.0)) - ((x - 0.5) - (x - 0.2))))
    assert torch.allclose(load_candidate(DPO).fn(x, x - 1.0, x - 0.5, x - 0.2, 0.1), expected)


def test_compiled_with_restricted_python() -> None:
    """Attribute access is routed through the guarded _getattr_ (RestrictedPython's rewriting)."""
    fn = load_candidate(DPO).fn
    assert "_getattr_" in fn.__code__.co_names
    assert fn.__globals__["__builtins__"].keys() >= {"abs", "min", "max", "range", "zip"}
    assert "open" not in fn.__globals__["__builtins__"]


BAD = [
    ("import os", "import os\n" + fn_src("return policy_chosen_logps"), "imports"),
    ("import inside", fn_src("import os\nreturn policy_chosen_logps"), "imports"),
    ("from numpy", "import numpy as np\n" + fn_src("return policy_chosen_logps"), "imports"),
    ("open()", fn_src("f = open('/etc/passwd')\nreturn policy_chosen_logps"), "forbidden_call"),
    ("__class__ walk", fn_src("x = ().__class__.__bases__[0].__subclasses__()\nreturn policy_chosen_logps"),
     "forbidden_attribute"),
    ("dunder name", fn_src("x = __builtins__\nreturn policy_chosen_logps"), "forbidden_name"),
    ("getattr", fn_src("g = getattr(torch, 'lo' + 'ad')\nreturn policy_chosen_logps"), "forbidden_call"),
    ("getattr as value", fn_src("g = getattr\nreturn policy_chosen_logps"), "forbidden_name"),
    ("torch.load", fn_src("w = torch.load('weights.pt')\nreturn policy_chosen_logps"), "forbidden_attribute"),
    ("torch.save", fn_src("torch.save(policy_chosen_logps, 'x.pt')\nreturn policy_chosen_logps"), "forbidden_attribute"),
    ("torch.utils", fn_src("m = torch.utils\nreturn policy_chosen_logps"), "forbidden_attribute"),
    ("torch.set_grad_enabled", fn_src("torch.set_grad_enabled(False)\nreturn policy_chosen_logps"),
     "forbidden_attribute"),
    ("manual_seed", fn_src("torch.manual_seed(0)\nreturn policy_chosen_logps"), "forbidden_attribute"),
    ("F.importlib", fn_src("m = F.importlib.import_module('os')\nreturn policy_chosen_logps"), "forbidden_attribute"),
    ("numpy()", fn_src("a = policy_chosen_logps.numpy()\nreturn policy_chosen_logps"), "forbidden_attribute"),
    ("register_hook", fn_src("policy_chosen_logps.register_hook(abs)\nreturn policy_chosen_logps"),
     "forbidden_attribute"),
    ("str.format", fn_src("s = '{0.__class__}'.format(beta)\nreturn policy_chosen_logps"), "forbidden_attribute"),
    ("exec", fn_src("exec('import os')\nreturn policy_chosen_logps"), "forbidden_call"),
    ("eval", fn_src("return eval('policy_chosen_logps')"), "forbidden_call"),
    ("print", fn_src("print(beta)\nreturn policy_chosen_logps"), "forbidden_call"),
    ("os name", fn_src("return os.getcwd()"), "forbidden_name"),
    ("undefined name", fn_src("return np.log(policy_chosen_logps)"), "forbidden_name"),
    ("while True", fn_src("while True:\n    pass\nreturn policy_chosen_logps"), "loop"),
    ("range 10**9", fn_src("for i in range(10**9):\n    pass\nreturn policy_chosen_logps"), "loop"),
    ("range 101", fn_src("for i in range(101):\n    pass\nreturn policy_chosen_logps"), "loop"),
    ("loop over tensor", fn_src("s = 0\nfor v in policy_chosen_logps:\n    s = s + v\nreturn s"), "loop"),
    ("comprehension over tensor", fn_src("return torch.stack([v for v in policy_chosen_logps])"), "loop"),
    ("nested loops", fn_src("for i in range(100):\n    for j in range(100):\n        for k in range(2):\n"
                            "            pass\nreturn policy_chosen_logps"), "loop"),
    ("recursion", fn_src("return my_loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, "
                         "reference_rejected_logps, beta)"), "loop"),
    ("lambda", fn_src("f = lambda t: t\nreturn f(policy_chosen_logps)"), "forbidden_syntax"),
    ("nested def", fn_src("def g(t):\n    return t\nreturn g(policy_chosen_logps)"), "forbidden_syntax"),
    ("class", fn_src("class A:\n    pass\nreturn policy_chosen_logps"), "forbidden_syntax"),
    ("global", fn_src("global beta2\nreturn policy_chosen_logps"), "forbidden_syntax"),
    ("with no_grad", fn_src("with torch.no_grad():\n    w = policy_chosen_logps * 1\nreturn w"), "forbidden_syntax"),
    ("try", fn_src("try:\n    x = 1\nexcept Exception:\n    x = 2\nreturn policy_chosen_logps"), "forbidden_syntax"),
    ("attribute store", fn_src("policy_chosen_logps.requires_grad = False\nreturn policy_chosen_logps"),
     "forbidden_syntax"),
    ("huge power", fn_src("x = 2 ** 100000\nreturn policy_chosen_logps"), "forbidden_syntax"),
    ("two functions", fn_src("return policy_chosen_logps") + "\n" + fn_src("return policy_chosen_logps", name="g"),
     "single_function"),
    ("top-level statement", "X = 3\n" + fn_src("return policy_chosen_logps"), "single_function"),
    ("no function", "import torch\n", "single_function"),
    ("wrong signature", "def f(chosen, rejected, beta):\n    return chosen\n", "signature"),
    ("reordered signature", "def f(policy_rejected_logps, policy_chosen_logps, reference_chosen_logps, "
                            "reference_rejected_logps, beta):\n    return policy_chosen_logps\n", "signature"),
    ("varargs", "def f(*args):\n    return args[0]\n", "signature"),
    ("kwargs", f"def f({SIG}, **kw):\n    return policy_chosen_logps\n", "signature"),
    ("decorator", "@torch.jit.script\n" + fn_src("return policy_chosen_logps"), "signature"),
    ("huge code", fn_src("x = 1\n" * 5000 + "return policy_chosen_logps"), "size"),
    ("too many nodes", fn_src("x = " + " + ".join(["beta"] * 3000) + "\nreturn policy_chosen_logps"), "size"),
    ("syntax error", "def f(:\n", "parse"),
    ("markdown fence", "```python\n" + fn_src("return policy_chosen_logps") + "```\n", "parse"),
]


@pytest.mark.parametrize("code,check", [(c, k) for _, c, k in BAD], ids=[n for n, _, _ in BAD])
def test_policy_rejects(code: str, check: str) -> None:
    with pytest.raises(PolicyViolation) as info:
        load_candidate(code)
    v = info.value
    assert v.check == check, str(v)
    assert v.evidence and v.hint
    if check not in ("size", "single_function"):
        assert "line " in v.evidence or check == "signature", v.evidence


def test_message_is_actionable() -> None:
    code = "import torch\n\n" + fn_src("x = policy_chosen_logps\nw = torch.load('w.pt')\nreturn x")
    with pytest.raises(PolicyViolation) as info:
        load_candidate(code)
    assert info.value.evidence.startswith("line 5: `torch.load` is not allowed; a loss may only do tensor math")
    assert "torch.load" in str(info.value) and "Hint:" in str(info.value)


def test_policy_violation_pickles() -> None:
    import pickle

    v = PolicyViolation("imports", "line 1: `import os`", "remove it")
    back = pickle.loads(pickle.dumps(v))
    assert (back.check, back.evidence, back.hint) == ("imports", "line 1: `import os`", "remove it")


def test_runtime_getattr_guard() -> None:
    import torch.nn.functional as F

    assert _guarded_getattr(torch, "sigmoid") is torch.sigmoid
    assert _guarded_getattr(F, "torch") is torch  # an allowed module
    for obj, name in ((F, "importlib"), (torch, "load"), (torch, "__dict__"), (torch.nn, "modules"),
                      (torch, "set_num_threads"), ("{}", "format")):
        with pytest.raises((PolicyViolation, AttributeError, NotImplementedError)):
            _guarded_getattr(obj, name)


def test_size_limit_is_configurable() -> None:
    with pytest.raises(PolicyViolation) as info:
        load_candidate(DPO, max_chars=100)
    assert info.value.check == "size"


def test_library_losses_pass_the_policy() -> None:
    losses = pytest.importorskip("lossforge.trainer.losses")
    x = torch.linspace(-60.0, -2.0, 8)
    for name in losses.library_names():
        loaded = load_candidate(losses.library_code(name))
        out = loaded.fn(x, x - 1.0, x - 0.5, x - 0.2, 0.1)
        assert torch.allclose(out, losses.LIBRARY[name](x, x - 1.0, x - 0.5, x - 0.2, 0.1), equal_nan=True), name


def test_runtime_loop_cap() -> None:
    """A list that grows while it is iterated passes the static rule but is cut off at run time."""
    code = fn_src("ws = [1.0]\nfor w in ws:\n    ws.append(w)\nreturn policy_chosen_logps * len(ws)")
    fn = load_candidate(code).fn
    x = torch.zeros(3)
    with pytest.raises(PolicyViolation) as info:
        fn(x, x, x, x, 0.1)
    assert info.value.check == "loop"


def test_loop_over_local_literal_is_allowed() -> None:
    code = fn_src("scales = (0.5, 1.0, 2.0)\ntotal = 0.0\nfor s in scales:\n"
                  "    total = total + F.softplus(-s * beta * (policy_chosen_logps - policy_rejected_logps))\n"
                  "return total")
    x = torch.linspace(-5.0, -1.0, 4)
    assert load_candidate(code).fn(x, x - 1.0, x, x, 0.1).shape == (4,)


def test_locals_may_shadow_refused_names() -> None:
    """Names are refused because of what they would reach; a local of the same name reaches nothing."""
    code = fn_src("signal = policy_chosen_logps - policy_rejected_logps\ncode = beta * signal\nreturn -F.logsigmoid(code)")
    x = torch.linspace(-5.0, -1.0, 4)
    assert load_candidate(code).fn(x, x - 1.0, x, x, 0.1).shape == (4,)


def test_a_missing_attribute_is_named_with_the_closest_names() -> None:
    """RestrictedPython's safer_getattr returns None for a missing attribute; the guard raises instead."""
    import math

    import torch.nn.functional as F

    with pytest.raises(AttributeError) as info:
        _guarded_getattr(F, "logsigmod")
    assert str(info.value) == "torch.nn.functional has no attribute 'logsigmod' (did you mean 'logsigmoid' or 'sigmoid'?)"
    with pytest.raises(AttributeError, match=r"torch has no attribute 'sigmod' \(did you mean 'sigmoid'"):
        _guarded_getattr(torch, "sigmod")
    with pytest.raises(AttributeError, match=r"^math has no attribute 'qwerty'$"):
        _guarded_getattr(math, "qwerty")

"""DESIGN.md's layering: serve imports runtime and Ray Serve, never torch, training or export;
the Client alone imports no Ray."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytest.importorskip("ray.serve")


def _modules_after(imports: str):
    code = (f"import sys\n{imports}\n"
            "print(' '.join(sorted(m for m in sys.modules if m == 'torch' or m == 'ray' or "
            "m.startswith(('samspt.training', 'samspt.export')))))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    return set(result.stdout.split())


def test_serve_never_imports_torch_training_or_export():
    loaded = _modules_after("import samspt.serve.deployment, samspt.serve.service, "
                            "samspt.serve.server, samspt.serve.client")
    assert "ray" in loaded
    assert not loaded - {"ray"}, loaded


def test_the_client_needs_no_ray():
    assert _modules_after("from samspt.serve import Client") == set()

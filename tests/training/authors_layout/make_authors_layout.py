"""Write the key names and shapes of the SPT authors' trainable tensors (THU-MIG/SAM-SPT) as JSON.

Run against a checkout of their repository; it builds their model with *their* code
(``sam_model_registry`` and ``prepare_lora`` from their ``main.py``) and records every tensor
their training marks trainable (``'lora' in name``), so samspt's import is tested against their
layout rather than against samspt's own idea of it:

    python tests/training/authors_layout/make_authors_layout.py PATH/TO/SAM-SPT vit_b > \
        tests/training/authors_layout/vit_b.json

Their ``main.py`` imports cv2, pandas, matplotlib and scikit-image for data loading and plotting
only; where those are absent, empty modules stand in for them (none of it is called here).
"""

import argparse
import json
import subprocess
import sys
import types


STAND_INS = ("cv2", "pandas", "matplotlib", "skimage")


class _StandIns:
    """Import finder: an empty module for each of ``names`` (and their submodules) that is not
    installed."""

    def __init__(self, names):
        self.names = names

    def find_spec(self, fullname, path=None, target=None):
        import importlib.machinery
        import importlib.util

        if fullname.split(".")[0] not in self.names:
            return None
        sys.meta_path.remove(self)
        try:
            real = importlib.util.find_spec(fullname.split(".")[0])
        finally:
            sys.meta_path.insert(0, self)
        if real is not None:
            return None
        return importlib.machinery.ModuleSpec(fullname, self, is_package=True)

    def create_module(self, spec):
        module = _Anything(spec.name)
        module.__path__ = []
        return module

    def exec_module(self, module):
        pass


class _Anything(types.ModuleType):
    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _Anything(f"{self.__name__}.{name}")

    def __call__(self, *args, **kwargs):
        return _Anything(self.__name__)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("repo", help="a checkout of github.com/THU-MIG/SAM-SPT")
    parser.add_argument("model_type", choices=["vit_b", "vit_l", "vit_h"])
    parser.add_argument("--lora-r", type=int, default=8, help="their --lora-r (default 8)")
    parser.add_argument("--commit", help="the checkout's commit, when it is not a git work tree")
    args = parser.parse_args()
    sys.path.insert(0, args.repo)
    sys.meta_path.insert(0, _StandIns(STAND_INS))
    import main as authors  # their main.py

    options = types.SimpleNamespace(vatt_init="zero", vatt_pos=-1, vatt_alpha=1.0,
                                    vatt_mask_detach=1)
    net = authors.sam_model_registry[args.model_type](checkpoint=None, args=options)
    base = net.state_dict()
    authors.prepare_lora(args.model_type, net, args.lora_r)
    state = net.state_dict()
    trainable = {k: list(v.shape) for k, v in state.items() if "lora" in k}
    commit = args.commit
    if commit is None:
        try:
            commit = subprocess.run(["git", "-C", args.repo, "rev-parse", "HEAD"], check=True,
                                    capture_output=True, text=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            commit = None
    json.dump({"source": "https://github.com/THU-MIG/SAM-SPT", "commit": commit,
               "model_type": args.model_type, "lora_r": args.lora_r,
               "base_tensors": len(base), "trainable": trainable}, sys.stdout, indent=1,
              sort_keys=True)
    print()


if __name__ == "__main__":
    main()

"""A tiny training run in a process of its own, for the tests that need separate processes
(reproducibility across processes, the training cache's lock): `python train_worker.py KIND ...`.

    python train_worker.py train OUT_DIR SEED       train into OUT_DIR, print its fingerprint
    python train_worker.py ensure MARKER            ensure_trained in $LLMOPT_CACHE_DIR; append a
                                                    line to MARKER each time this process trains"""

import sys

from llmopt import train as training
from llmopt.data import Example

# Toy E2E-like examples: training on them takes a second, where the real split's tokenizer alone takes more.
EXAMPLES = [Example(f"t{i}", f"name[Place {i % 7}], food[{f}]\nDescription:", f" Place {i % 7} serves {f} food.",
                    (f"Place {i % 7} serves {f} food.",)) for i in range(64) for f in ("Thai", "Indian")]


def recipe(seed: int = 0) -> training.Recipe:
    return training.default_recipe("e2e_nlg", "tiny", steps=10, vocab_size=300, seed=seed)


def main(kind: str, *args: str) -> None:
    training.data.load_split = lambda name, split, data_dir=None: EXAMPLES
    if kind == "train":
        out, seed = args
        path = training.train("e2e_nlg", recipe(int(seed)), out, device="cpu", progress=False)
        print(training.json.loads((path / "llmopt.json").read_text())["checkpoint_sha256"])
    elif kind == "ensure":
        (marker,) = args
        real_train = training.train

        def counted(*a, **k):
            with open(marker, "a") as f:
                f.write("trained\n")
            return real_train(*a, **k)

        training.train = counted
        print(training.ensure_trained("e2e_nlg", recipe(), device="cpu", progress=False))
    else:
        raise SystemExit(f"unknown kind {kind!r}")


if __name__ == "__main__":
    main(*sys.argv[1:])
